"""Every project function the control side sends to the cluster by reference (``client.submit``,
``client.map``, ``client.run``, ``client.run_on_scheduler``) lives in a module the nodes import
(``lock.node_modules``): the nodes run their installed copy of it, and only those modules name the
environment, so a task function elsewhere would run stale code after an edit with no `up` asked
for. A function defined inside another is sent by value (cloudpickle), as is a module registered
with ``register_pickle_by_value``."""

from __future__ import annotations

import ast
from pathlib import Path

from runner.provision.lock import node_modules

RUNNER = Path(__file__).resolve().parents[2] / "runner"
SENDS = {"submit", "map", "run", "run_on_scheduler"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(RUNNER.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _sent_by_reference(path: Path) -> list[tuple[int, str]]:
    """(line, module.function) of each project function this file sends to the cluster."""
    tree = ast.parse(path.read_text(), str(path))
    me = _module_name(path)
    modules: dict[str, str] = {}  # local name -> module, for `from runner.x import y` / `import`
    functions: dict[str, str] = {name.name: me for name in tree.body
                                 if isinstance(name, ast.FunctionDef)}
    by_value: set[str] = set()  # modules registered with register_pickle_by_value
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update({a.asname or a.name: a.name for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("runner"):
            for a in node.names:
                target = f"{node.module}.{a.name}"
                if (RUNNER.parent / Path(*target.split("."))).with_suffix(".py").exists() or \
                        (RUNNER.parent / Path(*target.split(".")) / "__init__.py").exists():
                    modules[a.asname or a.name] = target
                else:
                    functions[a.asname or a.name] = node.module
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == \
                "register_pickle_by_value" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Name):
                by_value.add(arg.id)
            elif "__name__" in ast.unparse(arg):  # sys.modules[__name__]: this module
                by_value.add(me)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in SENDS and node.args):
            continue
        if "client" not in ast.unparse(node.func.value):  # thread pools, fabric connections
            continue
        fn = node.args[0]
        if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) \
                and fn.value.id in modules:
            found.append((node.lineno, f"{modules[fn.value.id]}.{fn.attr}"))
        elif isinstance(fn, ast.Name) and fn.id in functions:
            found.append((node.lineno, f"{functions[fn.id]}.{fn.id}"))
    sent_by_value = {modules.get(name, name) for name in by_value}
    return [(line, target) for line, target in found  # the project's own, by reference
            if target.startswith("runner.") and target.rsplit(".", 1)[0] not in sent_by_value]


def test_every_task_function_sent_by_reference_is_node_code():
    node = {_module_name(p) for p in node_modules()}
    sent = [(path, line, target) for path in sorted(RUNNER.rglob("*.py"))
            for line, target in _sent_by_reference(path)]
    assert len(sent) > 20, sent  # the scan finds the pipeline's tasks
    stray = [f"{path.relative_to(RUNNER.parent)}:{line}: {target}" for path, line, target in sent
             if target.rsplit(".", 1)[0] not in node]
    assert not stray, ("task functions outside the node code (move them to a node module, or "
                       "import their module in runner/cluster/worker_imports.py):\n" + "\n".join(stray))
