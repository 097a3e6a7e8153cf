"""The code's shape, as docs/ARCHITECTURE-style rules a reviewer would check by hand: no import
circles between modules (function-level imports included), the app's core never reaching up into
its sweeps, the sweeper library never importing the app, and no long module without a reason."""
from __future__ import annotations

import ast
from pathlib import Path

from softmax_sweep.config import PROJECT_ROOT

ROOTS = (PROJECT_ROOT / "src", PROJECT_ROOT / "sweeper" / "src")
LONG = 320  # lines ("about 300"); a longer module says why in its docstring ("Long because ...")


def _modules() -> dict[str, Path]:
    found = {}
    for root in ROOTS:
        for path in root.rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of the others, wherever in the module they are."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [node.module, *subs]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_import_circles() -> None:
    graph = _imports(_modules())
    assert _cycles(graph) == []


def test_the_core_never_imports_the_sweeps_and_the_library_never_the_app() -> None:
    graph = _imports(_modules())
    core = [m for m in graph if m.startswith("softmax_sweep.") and not m.startswith("softmax_sweep.sweeping")]
    assert {m: sorted(t for t in graph[m] if t.startswith("softmax_sweep.sweeping")) for m in core
            if any(t.startswith("softmax_sweep.sweeping") for t in graph[m])} == {}
    library = [m for m in graph if m.startswith(("optuna_pruning", "hydra_plugins.optuna_pruning_sweeper"))]
    assert {m: sorted(graph[m]) for m in library if any(t.startswith("softmax_sweep") for t in graph[m])} == {}


def test_no_long_module_without_a_reason() -> None:
    long = {}
    for name, path in _modules().items():
        text = path.read_text()
        lines = text.count("\n")
        if lines > LONG and "Long because" not in (ast.get_docstring(ast.parse(text)) or ""):
            long[name] = lines
    assert long == {}, f"split them, or say in the docstring why not ('Long because ...'): {long}"
