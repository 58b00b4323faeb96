"""A YAML file read as a mapping, and pydantic's validation errors turned into lines that name
the file, the dotted key and what is allowed there (the cluster file's and the docs' checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from runner.errors import ConfigError


def _loc(err: ErrorDetails) -> str:
    return ".".join(str(p) for p in err["loc"]) or "(top level)"


def format_validation_error(path: Path, exc: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        key = _loc(err)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, err["loc"][:-1])
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"{path}: {key}: unknown key{hint}")
        elif err["type"] == "missing":
            choices = _choices(model, err["loc"])
            hint = f" (one of: {', '.join(choices)})" if choices else ""
            lines.append(f"{path}: {key}: required key is missing{hint}")
        elif err["type"] == "value_error":
            # our own validators: the message says what is wrong and often names its key
            msg = err["msg"].removeprefix("Value error, ")
            named = not err["loc"] or msg.startswith((f"{key}.", f"{key}:"))
            lines.append(f"{path}: {msg}" if named else f"{path}: {key}: {msg}")
        else:
            field = _field_at(model, tuple(p for p in err["loc"] if not isinstance(p, int)))
            hint = f"; {field.description}" if field is not None and field.description else ""
            lines.append(f"{path}: {key}: {err['msg']} (got {err.get('input')!r}){hint}")
    return "\n".join(lines) + "\nFix the file and run the command again."


def _field_at(model: type[BaseModel], loc: tuple) -> FieldInfo | None:
    return getattr(_model_at(model, loc[:-1]), "model_fields", {}).get(loc[-1]) if loc else None


def _choices(model: type[BaseModel], loc: tuple) -> tuple[str, ...]:
    """The values a required key at `loc` takes, when it is a Literal (e.g. provider)."""
    field = _field_at(model, loc)
    if field is None or get_origin(field.annotation) is not Literal:
        return ()
    return tuple(map(str, get_args(field.annotation)))


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed where an unknown one was."""
    return sorted(getattr(_model_at(model, loc), "model_fields", {}))


def _model_at(model: type[BaseModel], loc: tuple) -> Any:
    """Walk `loc` through nested models; None when it leads out of them."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        ann = field.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            inner = getattr(cand, "__args__", None)
            if inner and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
                cand = inner[0]
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                current = cand
                break
        else:
            return None
    return current


def read_yaml(path: Path, what: str) -> dict:
    if not path.exists():
        raise ConfigError(f"{path}: {what} file not found. Check the path (-c / argument).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of keys (name:, provider:, ...), "
                          f"not {type(data).__name__}.")
    return data
