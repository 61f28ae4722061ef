"""Print the import graph of the package and find its cycles.

    python tools/import_graph.py              # the graph, one line per module, then the cycles
    python tools/import_graph.py --cycles     # the cycles only (exit status 1 if any)
    python tools/import_graph.py --dot        # the graph in Graphviz's dot language

Every ``import`` and ``from ... import`` statement of every module of ``nqm_mc`` and
``validation`` is an edge, wherever it stands: at the top of the module, inside a function (a
deferred import) or under ``if TYPE_CHECKING:``. ``from package import name`` is an edge to the
module ``package.name`` when there is one, else to ``package`` itself. Importing a module also
runs its parents' ``__init__``; that implicit step is not an edge (a package's ``__init__``
re-exporting its modules would otherwise close a cycle with each of them).

A cycle is a strongly connected component of more than one module (or a module importing
itself), found by Tarjan's algorithm; each is printed with one shortest cycle through it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("nqm_mc", "validation")
DOT_STYLE = {"top": "", "typing": " [style=dotted]", "deferred": " [style=dashed]"}


def module_files(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Map each module's dotted name to its file (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, name: str, is_package: bool):
    """Yield (module, name or None, kind) for every import statement.

    The kind is ``top``, ``deferred`` (inside a function or class) or ``typing`` (under
    ``if TYPE_CHECKING:``).
    """
    def visit(node, kind):
        for child in ast.iter_child_nodes(node):
            k = kind
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                  ast.Lambda)) and kind == "top":
                k = "deferred"
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.body:
                    yield from visit_one(sub, "typing")
                for sub in child.orelse:
                    yield from visit_one(sub, kind)
                continue
            yield from visit_one(child, k)

    def visit_one(child, kind):
        if isinstance(child, ast.Import):
            for alias in child.names:
                yield alias.name, None, kind
        elif isinstance(child, ast.ImportFrom):
            base = child.module or ""
            if child.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[:len(here) - (child.level - 1)]
                base = ".".join(here + ([base] if base else []))
            for alias in child.names:
                yield base, alias.name, kind
        yield from visit(child, kind)

    yield from visit(tree, "top")


def build_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES):
    """Return the graph ``{module: {imported module: kind}}`` over the modules of ``packages``.

    The kind of an edge is the strongest of its statements (top > typing > deferred).
    """
    files = module_files(root, packages)
    rank = {"top": 2, "typing": 1, "deferred": 0}
    graph: dict[str, dict[str, str]] = {m: {} for m in files}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for base, attr, kind in _imports(tree, mod, path.name == "__init__.py"):
            target = f"{base}.{attr}" if attr and f"{base}.{attr}" in files else base
            while target and target not in files:  # `import a.b.c` of a non-module name
                target = target.rpartition(".")[0]
            if not target or target == mod and attr is not None:
                continue
            old = graph[mod].get(target)
            if old is None or rank[kind] > rank[old]:
                graph[mod][target] = kind
    return graph


def strongly_connected(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """Return the strongly connected components (Tarjan) that hold a cycle.

    That is, the components of more than one module, or of one module importing itself.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(out)


def shortest_cycle(graph: dict[str, dict[str, str]], comp: list[str]) -> list[str]:
    """Return one shortest cycle through the first module of a component (breadth first)."""
    start, inside = comp[0], set(comp)
    prev: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v]):
            if w not in inside:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return [start, start]


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """Return one shortest cycle per strongly connected component (none when acyclic)."""
    return [shortest_cycle(graph, comp) for comp in strongly_connected(graph)]


def main(argv: list[str] | None = None) -> int:
    """Print the graph (or its cycles); exit status 1 when there is a cycle."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", action="store_true", help="print the cycles only")
    parser.add_argument("--dot", action="store_true", help="the graph in dot")
    args = parser.parse_args(argv)
    graph = build_graph()
    found = cycles(graph)
    if args.dot:
        print("digraph imports {")
        for mod in sorted(graph):
            for dep, kind in sorted(graph[mod].items()):
                print(f'  "{mod}" -> "{dep}"{DOT_STYLE[kind]};')
        print("}")
    elif not args.cycles:
        mark = {"top": "", "typing": " (type checking)", "deferred": " (deferred)"}
        for mod in sorted(graph):
            deps = ", ".join(d + mark[k] for d, k in sorted(graph[mod].items()))
            print(f"{mod} -> {deps or '(nothing of the package)'}")
    n_edges = sum(len(v) for v in graph.values())
    print(f"{len(graph)} modules, {n_edges} imports between them, {len(found)} cycles")
    for cyc in found:
        kinds = [graph[a][b] for a, b in zip(cyc, cyc[1:], strict=False)]
        print("cycle: " + " -> ".join(cyc) + f"  ({', '.join(kinds)})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
