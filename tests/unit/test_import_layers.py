"""The layers of runner/ import one way: no import cycle between its modules. The graph is read
from the sources with ast: every import a module runs (at module level, in a function body, in a
package's lazy `__getattr__`), those under `if TYPE_CHECKING:` aside (never run). `from pkg
import sub` of a submodule is an edge to the submodule."""

from __future__ import annotations

import ast
from pathlib import Path

RUNNER = Path(__file__).resolve().parents[2] / "runner"


def modules(root: Path = RUNNER) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(tree: ast.AST, known: dict[str, Path]) -> set[str]:
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack += child.orelse
            else:
                stack.append(child)
    return found


def graph(root: Path = RUNNER) -> dict[str, set[str]]:
    known = modules(root)
    return {m: {i for i in imports(ast.parse(p.read_text()), known) if i in known and i != m}
            for m, p in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(g):
        if start in index:
            continue
        work = [(start, iter(sorted(g[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_runner_has_no_import_cycle():
    found = cycles(graph())
    assert found == [], "import cycles (each a group of modules importing each other):\n" + \
        "\n".join("  " + " <-> ".join(c) for c in found)


def test_the_check_finds_a_cycle_and_ignores_type_checking_imports(tmp_path):
    pkg = tmp_path / "runner"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "low.py").write_text("def f():\n    from runner.a import high\n")
    (pkg / "a" / "high.py").write_text("from runner.a import low\n")
    (pkg / "a" / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from runner.a import high\n")
    (pkg / "a" / "user.py").write_text("from runner.a import typed\n")
    assert cycles(graph(pkg)) == [["runner.a.high", "runner.a.low"]]
