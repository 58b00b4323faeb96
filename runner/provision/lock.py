"""Derive the workers' lock from the control machine's own environment.

The lock is the closure of what workers import (the dask stack, scikit-learn, dask-ml, ...) at the
exact versions installed here, plus the project's own source digest; its hash names the
environment on every node (/opt/daskfleet/envs/<hash>).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from runner.errors import ProvisionError

# What runs on the workers. The project itself is added as a wheel, installed without deps.
WORKER_ROOTS = (
    "dask[dataframe]", "distributed", "scikit-learn", "dask-ml", "pandas", "pyarrow", "numpy",
    "scipy", "joblib", "bokeh", "snowballstemmer",
    # a detached run's driver (runner.jobs.driver) reads the job file on the scheduler's host;
    # its own code comes with the run (runner.jobs.detached), so editing it restarts nothing
    "pydantic", "pyyaml",
)
PROJECT = "daskfleet"


@dataclass(frozen=True)
class Lock:
    python: str  # major.minor of the control machine, e.g. "3.11"
    machine: str  # uname -m of the control machine, e.g. "x86_64"
    pins: tuple[tuple[str, str], ...]  # sorted (canonical name, version)
    project_digest: str  # sha256 of the project's own source files

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text().encode()).hexdigest()[:16]

    def text(self) -> str:
        """The lock as a requirements file (without per-file hashes: those the wheelhouse adds)."""
        head = [
            f"# daskfleet worker lock: python {self.python} on {self.machine}",
            f"# project {PROJECT} source sha256 {self.project_digest}",
        ]
        return "\n".join(head + [f"{n}=={v}" for n, v in self.pins]) + "\n"

    def version_of(self, name: str) -> str | None:
        name = canonicalize_name(name)
        return next((v for n, v in self.pins if n == name), None)


def closure(roots: tuple[str, ...] = WORKER_ROOTS, dist=md.distribution) -> dict[str, str]:
    """name -> installed version for the roots and everything they require here (markers and
    extras evaluated against this interpreter)."""
    extras_seen: dict[str, set[str]] = {}
    versions: dict[str, str] = {}
    stack = [Requirement(r) for r in roots]
    while stack:
        req = stack.pop()
        name = canonicalize_name(req.name)
        try:
            d = dist(name)
        except md.PackageNotFoundError as e:
            raise ProvisionError(
                f"lock: {name} (needed by the workers) is not installed on this machine; "
                "run `make venv` to install the project with its dependencies."
            ) from e
        prev = extras_seen.get(name)
        if prev is not None and set(req.extras) <= prev:
            continue
        extras_seen[name] = (prev or set()) | set(req.extras)
        versions[name] = d.version
        for line in d.requires or []:
            sub = Requirement(line)
            envs = [{"extra": e} for e in (extras_seen[name] or {""})]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                stack.append(sub)
    return versions


# What the nodes import of the project: the workers' preload, which imports the modules of the
# batch's worker-side tasks (runner.batch.pipeline_* and runner.jobs.predict submit their
# functions), and the nanny's preload. With every project module they import in turn (found by
# reading the imports), this is the nodes' code: only it names the environment, so an edit to
# the CLI, the lab or the provisioning restarts nothing.
NODE_ENTRY_MODULES = ("runner.cluster.worker_imports", "runner.cluster.nanny_wait")


def _module_path(root: Path, module: str) -> Path | None:
    """The file of a module of the package at ``root`` (``root.name`` is its top-level name)."""
    parts = module.split(".")
    if parts[0] != root.name:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def node_modules(root: Path | None = None,
                 entries: tuple[str, ...] = NODE_ENTRY_MODULES) -> list[Path]:
    """The project files the nodes import: the entry modules, the packages they sit in (their
    __init__ runs on import) and every project module imported from these, at any depth, in a
    function body too."""
    import ast

    root = root or Path(__file__).resolve().parents[1]  # the runner package
    seen: set[Path] = set()
    todo = list(entries)
    while todo:
        module = todo.pop()
        names = module.split(".")
        # the module and every package above it
        for i in range(1, len(names) + 1):
            path = _module_path(root, ".".join(names[:i]))
            if path is None or path in seen:
                continue
            seen.add(path)
            todo += _imports(ast.parse(path.read_text(), str(path)))
    return sorted(seen)


def _imports(tree) -> list[str]:
    """The modules a file imports when it runs: at module level and in function bodies, but not
    under `if TYPE_CHECKING:` (never run) nor in a module's lazy `__getattr__` (the control-side
    names a package resolves on first use, which the nodes never ask for)."""
    import ast

    found: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names]  # submodules
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack += child.orelse
                continue
            if isinstance(child, ast.FunctionDef) and child.name == "__getattr__":
                continue
            stack.append(child)
    return found


def project_digest(root: Path | None = None) -> str:
    """sha256 over the project files the nodes import (``node_modules``), so a change to what
    the nodes run makes a new environment, and nothing else does."""
    root = root or Path(__file__).resolve().parents[1]  # the runner package
    h = hashlib.sha256()
    for path in node_modules(root):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def derive_lock(machine: str | None = None) -> Lock:
    """This machine's lock for nodes of `machine` (default: this machine's architecture).

    The pins are this environment's own versions whatever the target architecture: the worker
    stack has no architecture-specific requirements, and a version without a wheel for the
    target fails the wheelhouse build, naming the package."""
    pins = tuple(sorted(closure().items()))
    return Lock(
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
        machine=machine or platform.machine(),
        pins=pins,
        project_digest=project_digest(),
    )
