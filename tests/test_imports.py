"""The package's modules import each other without cycles (issue #11).

A cycle means two modules each need the other: responsibilities in the wrong rooms, and an
import order that decides whether a name exists yet. Only imports that run when a module is
imported count: an import inside a function (done lazily, to keep torch out of ``import
lstmgen``) or under ``if TYPE_CHECKING:`` does not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lstmgen

PACKAGE = Path(lstmgen.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = ["lstmgen", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def all_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import, function bodies and ``if TYPE_CHECKING:`` included."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run at import time: the module body and the blocks in it (if / try /
    with), but not function or class bodies' functions, nor ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            if not is_type_checking(node.test):
                todo += node.body
            todo += node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                todo += handler.body
        elif isinstance(node, (ast.With, ast.ClassDef)):
            todo += node.body  # a class body runs at import time; its methods do not
    return found


def imported(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """What ``node`` (inside ``module``) imports, as absolute dotted names: a module, or
    ``package.name`` for each name of ``from package import name`` (a submodule or not)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [f"{target}.{a.name}" for a in node.names]


def import_graph(imports=module_level_imports) -> dict[str, set[str]]:
    """Module -> the package modules it imports (at import time, by default). ``from pkg import
    mod`` is an edge to ``pkg.mod`` (not to ``pkg``, whose ``__init__`` is then already
    importing)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in imports(tree):
            for dotted in imported(name, is_package, node):
                while dotted and dotted not in files:  # a name inside a module: the module
                    dotted = dotted.rpartition(".")[0]
                targets.add(dotted)
        graph[name] = {t for t in targets if t and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for root in sorted(graph):
        if colour[root] != WHITE:
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        colour[root] = GREY
        while stack:
            node, todo = stack[-1]
            if not todo:
                colour[node] = BLACK
                stack.pop()
                continue
            nxt = todo.pop()
            if colour[nxt] == GREY:
                path = [n for n, _ in stack]
                return path[path.index(nxt) :] + [nxt]
            if colour[nxt] == WHITE:
                colour[nxt] = GREY
                stack.append((nxt, sorted(graph[nxt])))
    return None


def all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by removing one edge of each found cycle in turn (for the message)."""
    graph = {k: set(v) for k, v in graph.items()}
    cycles = []
    while (cycle := find_cycle(graph)) is not None:
        cycles.append(cycle)
        graph[cycle[-2]].discard(cycle[-1])
    return cycles


def test_the_package_has_no_import_cycles():
    cycles = all_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_cycle_hides_behind_a_lazy_import():
    """A function-level import keeps torch out of ``import lstmgen``; it must not be the way
    round a cycle (``config`` once read JSON through ``modeldir``, which imports ``config``)."""
    cycles = all_cycles(import_graph(all_imports))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    tree = ast.parse(
        "import os\nfrom . import x\nif TYPE_CHECKING:\n    from . import y\n"
        "def f():\n    from . import z\ntry:\n    from .w import v\nexcept ImportError:\n    pass\n"
    )
    found = {x for node in module_level_imports(tree) for x in imported("lstmgen.m", False, node)}
    assert found == {"os", "lstmgen.x", "lstmgen.w.v"}


def test_the_file_helpers_import_only_the_errors():
    """files.py is a leaf (issue #11): everything may use it, so it may use nothing but
    errors.py, which itself imports nothing from the package."""
    graph = import_graph(all_imports)
    assert graph["lstmgen.files"] <= {"lstmgen.errors"}
    assert graph["lstmgen.errors"] == set()
