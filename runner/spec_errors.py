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


class KeyProblem(ValueError):
    """Raised by a model validator about one of its own keys, so the message can name it
    (``section.key``, not only the section)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")


# pydantic's "not of this type" errors: the message gains the type of what the file holds
TYPE_ERRORS = ("int_type", "int_parsing", "float_type", "float_parsing", "bool_type",
               "bool_parsing", "string_type", "list_type", "model_type", "dict_type")


def format_validation_error(path: Path, exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem, each naming the file and the dotted key, then what to do. Used for
    cluster files and job files alike."""
    errors = exc.errors()
    # an unknown key next to a missing one at the same level is most likely a typo of it:
    # report the unknown key (with the allowed ones), not its consequence
    typo_parents = {err["loc"][:-1] for err in errors if err["type"] == "extra_forbidden"}
    errors = [err for err in errors
              if not (err["type"] == "missing" and err["loc"][:-1] in typo_parents)]
    lines = [f"{path}: {describe(err, model)}" for err in errors]
    return "\n".join(lines) + "\nFix the file and run the command again."


def describe(err: ErrorDetails, model: type[BaseModel]) -> str:
    """One validation error as ``key: what is wrong (what is allowed)``."""
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    names = tuple(p for p in err["loc"] if not isinstance(p, int))
    field = _field_at(model, names)
    what = f" ({field.description})" if field is not None and field.description else ""
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, err["loc"][:-1])
        return f"{key}: unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if err["type"] == "missing":
        choices = _choices(model, err["loc"])
        return f"{key}: required key is missing" + (
            f" (one of: {', '.join(choices)})" if choices else what)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error":
        # our own validators: the message says what is wrong, and a KeyProblem names its key
        if isinstance((err.get("ctx") or {}).get("error"), KeyProblem):
            return f"{key}.{msg}" if err["loc"] else msg
        named = not err["loc"] or msg.startswith((f"{key}.", f"{key}:"))
        return msg if named else f"{key}: {msg}"
    got = err.get("input")
    if err["type"] in TYPE_ERRORS:
        return f"{key}: {msg}, got {type(got).__name__} {got!r}{what}"
    return f"{key}: {msg} (got {got!r}){what}"


def _field_at(model: type[BaseModel], loc: tuple) -> FieldInfo | None:
    return getattr(_model_at(model, loc[:-1]), "model_fields", {}).get(loc[-1]) if loc else None


def _choices(model: type[BaseModel], loc: tuple) -> tuple[str, ...]:
    """The values a required key at `loc` takes, when it is a Literal (e.g. provider)."""
    field = _field_at(model, loc)
    if field is None or get_origin(field.annotation) is not Literal:
        return ()
    return tuple(map(str, get_args(field.annotation)))


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed where an unknown one was, in the model's (and the docs') order."""
    fields = getattr(_model_at(model, loc), "model_fields", {})
    return [name for name, f in fields.items() if not f.exclude]


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
