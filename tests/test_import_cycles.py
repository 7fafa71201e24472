"""No import cycles between the modules of ``mplus``.

A cycle hidden by an import inside a function still couples the two modules (neither can be
understood, tested or moved alone) and breaks as soon as someone hoists the import, so the graph
counts every import: module level, inside functions, under ``TYPE_CHECKING``. It is built with
:mod:`ast`, not by importing anything.

An edge goes to the module an import names (``from mplus.a import b`` -> ``mplus.a.b`` when that
is a module, else ``mplus.a``); the parent packages Python also runs are not edges, or every
package ``__init__`` that re-exports its submodules would be a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "mplus"

# The modules of the config/eval/models refactor that made them acyclic: a cycle through any of
# these is a regression.
OWNED = {
    "mplus.config",
    "mplus.config_common",
    "mplus.config_doc",
    "mplus.eval.config",
    "mplus.eval.common",
    "mplus.models.base",
    "mplus.models.builders",
    "mplus.models.pretrained",
}


def _modules(root: Path = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package)}`` of every module under ``root``."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: the mplus modules it imports}``, every import statement counted."""
    modules = _modules(root)
    top = root.name

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, (path, is_pkg) in modules.items():
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from . import x, from ..a import b
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                names = [
                    f"{src}.{a.name}" if f"{src}.{a.name}" in modules else src for a in node.names
                ]
            else:
                continue
            for name in names:
                target = known(name) if name.split(".")[0] == top else None
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def describe(comp: list[str], graph: dict[str, set[str]]) -> str:
    inside = set(comp)
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & inside))}" for m in comp)


def test_the_graph_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("import pkg.a\n")
    (pkg / "c.py").write_text("from .sub.b import x\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.sub.b"} and graph["pkg.sub"] == {"pkg.sub.b"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_no_import_cycles():
    graph = import_graph()
    assert OWNED <= set(graph), sorted(OWNED - set(graph))
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(describe(c, graph) for c in found)
