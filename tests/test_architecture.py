"""The package's shape, read from its source (``ast``; nothing is imported except in the last test).

(a) No import cycle between mmbench's modules. Every ``import`` statement counts, wherever it sits:
    module level, inside a function or a class, under ``if TYPE_CHECKING:``. A function-level import is
    still a dependency (it only moves the failure from import time to call time), and a type-only import
    still ties the two modules' designs together; counting both keeps the layers honest. An edge goes to
    the module named: ``from mmbench.a import b`` points at ``mmbench.a.b`` when that is a module, else at
    ``mmbench.a``. The implicit import of parent packages (importing ``mmbench.a.b`` runs
    ``mmbench/a/__init__.py``) is not an edge here: a package's ``__init__`` re-exporting its own
    submodules would otherwise form a cycle with each of them.
(b) No private import across packages: a name (or module) whose dotted path has a component starting
    with ``_`` (dunders aside) belongs to the first-level unit it lives in (``mmbench.x`` for
    ``mmbench.x.y._z``), and only modules inside that unit may import it, or reach it as
    ``alias._z`` through a module they imported.
(c) ``import mmbench``, ``mmbench.api`` and ``mmbench.cli`` pull in none of torch, faiss, transformers,
    mteb, sentence_transformers: statically (the module-level imports those modules reach, parent
    packages included, since they do run) and for real in a fresh interpreter, ``mmbench --help`` too.

Each failure message lists every offending edge with its file and line.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "harness" / "mmbench"
HEAVY = ("torch", "faiss", "transformers", "mteb", "sentence_transformers")
LIGHT_ENTRY_POINTS = ("mmbench", "mmbench.api", "mmbench.cli")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str              # a dotted module name (mmbench's own, or a third-party root such as torch)
    line: int
    module_level: bool       # runs when the source module is imported
    names: tuple[str, ...]   # what a `from ... import` takes (empty for `import x`)

    def where(self) -> str:
        return f"{_path(self.source)}:{self.line}"


def _modules() -> dict[str, Path]:
    """Every module of the package, found by walking folders with pkgutil (no import)."""
    found = {"mmbench": ROOT / "__init__.py"}

    def walk(folder: Path, prefix: str) -> None:
        for info in pkgutil.iter_modules([str(folder)]):
            name = f"{prefix}.{info.name}"
            if info.ispkg:
                found[name] = folder / info.name / "__init__.py"
                walk(folder / info.name, name)
            elif (folder / f"{info.name}.py").is_file():      # compiled helpers (native/_native.*.so) have no source
                found[name] = folder / f"{info.name}.py"

    walk(ROOT, "mmbench")
    return found


MODULES = _modules()


def _path(module: str) -> str:
    return str(MODULES[module].relative_to(ROOT.parent.parent))


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _resolve_from(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package_of(module).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[Edge]:
    """Every import statement of a module, with whether it runs at import time (not inside a def)."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    edges: list[Edge] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                edges.extend(Edge(module, alias.name, child.lineno, module_level, ()) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve_from(module, child)
                names = tuple(alias.name for alias in child.names)
                if base.split(".")[0] != "mmbench":
                    edges.append(Edge(module, base, child.lineno, module_level, names))
                    continue
                plain = [n for n in names if f"{base}.{n}" not in MODULES]
                if plain:
                    edges.append(Edge(module, base, child.lineno, module_level, tuple(plain)))
                edges.extend(Edge(module, f"{base}.{n}", child.lineno, module_level, ())
                             for n in names if f"{base}.{n}" in MODULES)
            else:
                inner = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                visit(child, module_level and not inner)

    visit(tree, True)
    return edges


EDGES = {m: _imports(m) for m in MODULES}


def _internal(edge: Edge) -> str | None:
    """The mmbench module an edge points at (the longest known prefix), or None for third-party."""
    parts = edge.target.split(".")
    if parts[0] != "mmbench":
        return None
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in MODULES:
            return candidate
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
            if len(component) > 1 or v in graph[v]:
                out.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                connect(v)
    finally:
        sys.setrecursionlimit(limit)
    return out


def test_the_walk_finds_the_package():
    assert {"mmbench", "mmbench.api", "mmbench.cli", "mmbench.search", "mmbench.pipeline.run"} <= set(MODULES)
    assert len(MODULES) > 40
    # the resolver itself: relative imports and `from package import submodule` edges
    assert _resolve_from("mmbench.cli", ast.parse("from . import x").body[0]) == "mmbench.cli"
    assert _resolve_from("mmbench.analysis.compare", ast.parse("from ..util import io").body[0]) == "mmbench.util"
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}, "b": set()}) == [["a"]]
    # the static closure does see a heavy import where one runs at import time (so its test can fail)
    assert "torch" in _runtime_closure(("mmbench.models.clip",))


def test_no_import_cycles():
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[Edge]] = defaultdict(list)
    for module, edges in EDGES.items():
        graph[module]
        for edge in edges:
            target = _internal(edge)
            if target is not None:
                graph[module].add(target)
                where[module, target].append(edge)
    problems = []
    for component in _cycles(graph):
        members = set(component)
        lines = [f"cycle among {', '.join(component)}:"]
        for a in component:
            for b in sorted(graph[a] & members):
                for e in where[a, b]:
                    kind = "module level" if e.module_level else "in a function"
                    lines.append(f"    {a} -> {b}  ({e.where()}, {kind})")
        problems.append("\n".join(lines))
    assert not problems, "import cycles:\n" + "\n".join(problems)


def _owner(dotted: str) -> str | None:
    """The first-level unit owning a private component of a dotted path (None if nothing is private)."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            return ".".join(parts[:2]) if i >= 2 else "mmbench"
    return None


def _inside(module: str, unit: str) -> bool:
    return module == unit or module.startswith(unit + ".")


def _private_uses(module: str) -> list[tuple[str, int]]:
    """`alias._name` where alias was bound to an mmbench module by an import in this file."""
    tree = ast.parse(MODULES[module].read_text())
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, node)
            for a in node.names:
                if f"{base}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{base}.{a.name}"
    return [(f"{aliases[node.value.id]}.{node.attr}", node.lineno) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases]


def test_no_private_imports_across_packages():
    problems = []
    for module, edges in EDGES.items():
        for edge in edges:
            if not edge.target.startswith("mmbench"):
                continue
            for dotted in [edge.target] + [f"{edge.target}.{n}" for n in edge.names]:
                unit = _owner(dotted)
                if unit is not None and not _inside(module, unit):
                    problems.append(f"    {module} imports {dotted}  ({edge.where()}; private to {unit})")
        for dotted, line in _private_uses(module):
            unit = _owner(dotted)
            if unit is not None and not _inside(module, unit):
                problems.append(f"    {module} uses {dotted}  ({_path(module)}:{line}; private to {unit})")
    assert not problems, "private names used outside their package:\n" + "\n".join(sorted(set(problems)))


def test_owner_of_private_names():
    assert _owner("mmbench.search.engine._select") == "mmbench.search"
    assert _owner("mmbench.config._x") == "mmbench.config"
    assert _owner("mmbench._private") == "mmbench"
    assert _owner("mmbench.__version__") is None and _owner("mmbench.api.run") is None


def _runtime_closure(roots: tuple[str, ...]) -> dict[str, tuple[str, Edge | None]]:
    """Modules that importing the roots runs: module-level imports and every parent package.
    Maps each reached module (mmbench's or a third-party root) to (the module that reached it, the edge)."""
    reached: dict[str, tuple[str, Edge | None]] = {r: ("", None) for r in roots}
    todo = list(roots)
    while todo:
        module = todo.pop()
        parent = module.rpartition(".")[0]
        steps: list[tuple[str, Edge | None]] = [(parent, None)] if parent else []
        for edge in EDGES[module]:
            if not edge.module_level:
                continue
            target = _internal(edge)
            if target is None and edge.target.split(".")[0] != "mmbench":
                target = edge.target.split(".")[0]
            if target is not None:
                steps.append((target, edge))
        for target, edge in steps:
            if target not in reached:
                reached[target] = (module, edge)
                if target in MODULES:
                    todo.append(target)
    return reached


def test_light_entry_points_do_not_import_heavy_packages_statically():
    reached = _runtime_closure(LIGHT_ENTRY_POINTS)
    problems = []
    for heavy in HEAVY:
        if heavy not in reached:
            continue
        chain, node = [], heavy
        while reached[node][0]:
            via, edge = reached[node]
            chain.append(f"{via} -> {node}" + (f" ({edge.where()})" if edge else " (parent package)"))
            node = via
        problems.append(f"{heavy}:\n    " + "\n    ".join(reversed(chain)))
    assert not problems, "a light entry point imports a heavy package at import time:\n" + "\n".join(problems)


@pytest.mark.parametrize("code", [
    "import mmbench, mmbench.api, mmbench.cli",
    "import sys; from mmbench.cli import main; sys.argv = ['mmbench', '--help']; main()",
    "import sys; from mmbench.cli import main; sys.argv = ['mmbench', 'run', '--help']; main()",
])
def test_light_entry_points_do_not_import_heavy_packages_at_run_time(code):
    probe = (f"import atexit, sys\n"
             f"def report():\n"
             f"    heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
             f"    print('HEAVY', heavy, file=sys.stderr)\n"
             f"    if heavy: sys.stderr.flush(); __import__('os')._exit(3)\n"
             f"atexit.register(report)\n" + code.replace("; ", "\n"))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert "HEAVY []" in out.stderr and out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
