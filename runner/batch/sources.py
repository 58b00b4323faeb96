"""Control side: the files of a ``files`` data source, and their formats.

``data.path`` is a file, a glob (``data/*.csv``) or a folder (every file of a known format in
it, recursively; or, for ``text-dirs``, one sub-folder per label with one document per file,
the 20 Newsgroups layout). Standard library only.
"""

from __future__ import annotations

import glob
from pathlib import Path

from runner.errors import BatchError

FILE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl",
                ".ndjson": "jsonl"}
FORMATS = ("parquet", "csv", "jsonl", "text-dirs")
GLOB_CHARS = set("*?[")


def infer_format(path: Path) -> str:
    fmt = FILE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise BatchError(f"{path}: unsupported file type {Path(path).suffix or '(none)'!r} "
                         f"(use one of: {', '.join(FILE_FORMATS)}, or set data.format)")
    return fmt


def is_glob(path: str | Path) -> bool:
    return bool(GLOB_CHARS & set(str(path)))


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def looks_like_text_dirs(folder: Path) -> bool:
    """A folder whose entries are only sub-folders (one per label) that hold files."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return bool(entries) and all(p.is_dir() for p in entries)


def resolve_files(path: Path, fmt: str | None) -> tuple[str, list[Path]]:
    """(format, sorted input files) of a ``files`` source; errors name the path."""
    path = Path(path)
    if is_glob(path):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise BatchError(f"{path}: the pattern matches no file")
    elif path.is_dir():
        if fmt == "text-dirs" or (fmt is None and looks_like_text_dirs(path)):
            files = sorted(p for p in path.rglob("*") if p.is_file() and _visible(p, path))
            if not files:
                raise BatchError(f"{path}: no documents in the label folders")
            if all(f.parent == path for f in files):
                raise BatchError(f"{path}: no label sub-folders: text-dirs takes each document's "
                                 "label from the name of the folder it is in; put the documents "
                                 f"in one sub-folder per label (e.g. {path / 'sports' / '1.txt'})")
            return "text-dirs", files
        files = sorted(p for p in path.rglob("*") if p.is_file() and _visible(p, path)
                       and (fmt is not None or p.suffix.lower() in FILE_FORMATS))
        if not files:
            raise BatchError(f"{path}: no {fmt or 'parquet, csv or jsonl'} files in the folder; "
                             "point data.path at such files, or put text documents in one "
                             f"sub-folder per label (text-dirs: {path / '<label>' / '1.txt'})")
    elif path.is_file():
        files = [path]
    else:
        raise BatchError(f"{path}: file not found")
    if fmt == "text-dirs":
        raise BatchError(f"{path}: format text-dirs needs a folder with one sub-folder per label")
    if fmt is None:
        formats = {infer_format(f) for f in files}
        if len(formats) > 1:
            raise BatchError(f"{path}: files of several formats ({', '.join(sorted(formats))}); "
                             "set data.format or narrow data.path")
        fmt = formats.pop()
    return fmt, files
