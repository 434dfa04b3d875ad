"""The packages' import graph has no circle, and every module imports on its own in a fresh interpreter.

The graph is read with `ast` from each module's imports (`if TYPE_CHECKING:` blocks left out): `from a.b
import c` is an edge to the module `a.b.c` when that is a module, else to `a.b`, and also to every package
above the target that the importer is not inside (Python runs `a/__init__.py` first: a package file that
re-exports its modules extends every import of one of them). Two graphs are checked: the imports that run
when a module is imported (top level), and all of them, those inside functions included, so that an import
moved into a function (allowed only for a measured import-time reason) cannot hide a circle either.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lmm", "analysis", "hydra_plugins")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the packages by dotted name (`pkg/__init__.py` is `pkg`)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(body: list[ast.stmt], deep: bool):
    """The import statements that run when the module is imported (top level, class bodies, top-level
    try/if/with blocks); with `deep`, also those inside functions."""
    for node in body:
        if _is_type_checking(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if deep:
                yield from _imports(node.body, deep)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, None) or []:
                    if isinstance(child, ast.stmt):
                        yield from _imports([child], deep)
                    elif isinstance(child, ast.ExceptHandler):
                        yield from _imports(child.body, deep)


def _with_packages(targets: set[str], importer: str, modules: dict) -> set[str]:
    """The targets plus the packages above them that importing them runs, except the importer's own."""
    own = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}
    out = set(targets)
    for target in targets:
        parts = target.split(".")
        out |= {p for i in range(1, len(parts)) if (p := ".".join(parts[:i])) in modules and p not in own}
    return out


def _targets(node: ast.stmt, name: str, is_package: bool, modules: dict) -> set[str]:
    return _with_packages(_direct_targets(node, name, is_package, modules), name, modules)


def _direct_targets(node: ast.stmt, name: str, is_package: bool, modules: dict) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    base = node.module or ""
    if node.level:
        parts = name.split(".")
        anchor = parts if is_package else parts[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in modules:
            out.add(sub)
        elif base in modules:
            out.add(base)
    return out


def import_graph(root: Path = ROOT, deep: bool = False) -> dict[str, set[str]]:
    """module → the project modules it imports (top level only unless `deep`)."""
    modules = module_files(root)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        for node in _imports(tree.body, deep):
            edges |= _targets(node, name, path.name == "__init__.py", modules)
        graph[name] = edges - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_circle():
    found = circles(import_graph())
    assert not found, "import circles (top-level imports):\n" + "\n".join(" → ".join(c) for c in found)


def test_no_import_circle_through_imports_inside_functions():
    found = circles(import_graph(deep=True))
    assert not found, "import circles (imports inside functions included):\n" + "\n".join(
        " → ".join(c) for c in found)


def test_a_package_file_that_imports_its_modules_counts():
    graph = import_graph()
    # `lmm.config` asks `lmm.plan.checkpointing`, which runs `lmm/plan/__init__.py` first.
    assert {"lmm.plan.checkpointing", "lmm.plan"} <= graph["lmm.config"]
    assert "lmm.plan" not in graph["lmm.plan.memory"]  # a module of the package does not re-run it


def test_shared_helpers_import_nothing_of_ours():
    graph = import_graph(deep=True)
    for leaf in ("lmm", "lmm.atomic", "lmm.filelock", "lmm.ranks", "lmm.units", "lmm.tuning"):
        assert graph[leaf] == set(), (leaf, graph[leaf])


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(n for n in module_files() if not n.endswith("__main__"))
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    done = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
