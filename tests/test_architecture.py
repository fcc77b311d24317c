"""The package's import graph: no cycles, and arrows one way between the layers.

The graph is read from the source with :mod:`ast` (no import is executed): every ``import`` and
``from ... import`` of a module of ``fusion_explorer``, at module level or inside a function,
relative imports resolved. ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module, else to ``pkg``; importing a submodule is not counted as importing its parent package's
``__init__`` (that would put every re-exporting package in a cycle with its own modules).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "fusion_explorer"

#: The layers (``fusion_explorer.<layer>``), lowest first: a layer may import only layers before it
#: (``reader -> cube -> physics -> FusionProblem -> method -> FusionResult -> metrics / app``). A new
#: top-level module or package must be placed here. Entries for modules that do not exist (yet) are allowed.
LAYERS = [
    "data",  # package data (no imports)
    "errors",
    "config",
    "memory",
    "cube",
    "render",
    "io",
    "srf",
    "physics",
    "metrics",
    "problem",
    "degradations",  # the zoo: PSF families, offsets, noise models, cases (physics, srf, cube, problem)
    "estimate",  # blind estimation of SRF, PSF, offset and noise from a pair (usable by methods)
    "synth",
    "scenes",  # load / crop / ground truth of a scene (io, srf; synth for the embedded default scene)
    "methods",
    "tiled",  # running a method tile by tile on large scenes
    "bench",
    "explore",
    "app",
    "cli",
]

#: Edges allowed against the rules above, each with the reason; remove one once it is gone (a stale
#: entry fails :func:`test_known_exceptions_still_exist`).
KNOWN_EXCEPTIONS = {
    # physics.__getattr__("simulate"): a lazy re-export of problem.simulate kept for code outside the
    # package (tests, benchmarks, users) that does `from fusion_explorer.physics import simulate`; the
    # package itself imports it from fusion_explorer.problem. Drop it (and this entry) with that alias.
    ("fusion_explorer.physics", "fusion_explorer.problem"),
}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    modules = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _edges(modules: dict[str, Path]) -> list[tuple[str, str, str]]:
    """``(importer, imported, "file:line")`` for every import of a package module by another."""
    edges = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - (node.level - 1)]
                    source = ".".join(parts + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                submodules = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules]
                targets = submodules if len(submodules) == len(node.names) else [source, *submodules]
            else:
                continue
            for target in targets:
                while target not in modules and "." in target:  # `import a.b.c` of a name in a.b
                    target = target.rpartition(".")[0]
                if target in modules and target != name:
                    edges.append((name, target, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return edges


def _cycles(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    adjacency: dict[str, list[str]] = {}
    for a, b in edges:
        adjacency.setdefault(a, []).append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(adjacency.get(root, ())))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(adjacency.get(w, ()))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""  # "": the package's own __init__ (lazy facade)


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[tuple[str, str, str]]]:
    modules = _modules()
    return modules, _edges(modules)


def _describe(component: list[str], edges, key=lambda m: m) -> str:
    inside = set(component)
    lines = [f"  {a} -> {b}  ({where})" for a, b, where in edges if key(a) in inside and key(b) in inside
             and key(a) != key(b)]
    return "cycle " + " / ".join(component) + ":\n" + "\n".join(sorted(set(lines)))


def test_graph_sees_relative_and_function_level_imports(graph):
    _, edges = graph
    pairs = {(a, b) for a, b, _ in edges}
    assert ("fusion_explorer.methods.cnmf", "fusion_explorer.problem") in pairs  # module level, relative
    assert ("fusion_explorer.cli", "fusion_explorer.methods") in pairs  # inside a function
    assert ("fusion_explorer.methods", "fusion_explorer.methods.bicubic") in pairs  # `from . import bicubic`


def test_known_exceptions_still_exist(graph):
    _, edges = graph
    pairs = {(a, b) for a, b, _ in edges}
    assert KNOWN_EXCEPTIONS <= pairs, f"remove the gone exceptions: {sorted(KNOWN_EXCEPTIONS - pairs)}"


def test_no_import_cycle_between_modules(graph):
    modules, edges = graph
    kept = [(a, b, where) for a, b, where in edges if (a, b) not in KNOWN_EXCEPTIONS]
    cycles = _cycles(modules, [(a, b) for a, b, _ in kept])
    assert not cycles, "import cycles between modules:\n" + "\n".join(_describe(c, kept) for c in cycles)


def test_no_import_cycle_between_layers(graph):
    modules, edges = graph
    kept = [(a, b, where) for a, b, where in edges if (a, b) not in KNOWN_EXCEPTIONS]
    layers = sorted({_layer(m) for m in modules})
    cycles = _cycles(layers, [(_layer(a), _layer(b)) for a, b, _ in kept if _layer(a) != _layer(b)])
    assert not cycles, "import cycles between layers:\n" + "\n".join(_describe(c, kept, _layer) for c in cycles)


def test_layers_import_only_lower_layers(graph):
    modules, edges = graph
    unplaced = sorted({_layer(m) for m in modules} - set(LAYERS) - {""})
    assert not unplaced, f"place these top-level modules in LAYERS: {unplaced}"
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = sorted(
        f"  {a} -> {b}  ({where}): {_layer(a)} may not import {_layer(b)}"
        for a, b, where in edges
        if (a, b) not in KNOWN_EXCEPTIONS and _layer(a) and _layer(b) and rank[_layer(a)] < rank[_layer(b)]
    )
    assert not upward, "imports against the layer order (lowest first: " + ", ".join(LAYERS) + "):\n" + "\n".join(
        upward
    )


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("physics", {"problem", "methods", "synth", "app", "cli"}),
        ("problem", {"methods", "synth", "app", "cli"}),
        ("synth", {"methods", "app", "cli"}),
        ("scenes", {"problem", "methods", "bench", "app", "cli"}),
        ("io", {"physics", "problem", "methods", "scenes", "app", "cli"}),
        ("methods", {"app", "cli"}),
    ],
)
def test_layer_does_not_know(graph, layer, forbidden):
    _, edges = graph
    bad = sorted(
        f"  {a} -> {b}  ({where})"
        for a, b, where in edges
        if _layer(a) == layer and _layer(b) in forbidden and (a, b) not in KNOWN_EXCEPTIONS
    )
    assert not bad, f"{layer} imports {', '.join(sorted(forbidden))}:\n" + "\n".join(bad)
