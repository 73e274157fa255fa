"""The import graph of minigen and its kernels: no circles, not even through imports inside
functions, and ``kernels`` imports nothing from the rest of minigen.

Every ``import`` and ``from ... import`` statement in every module (at import time or inside a
function, read with ``ast``, relative ones resolved) is an edge from its module to the module
it names: ``from pkg import name`` points at ``pkg.name`` when that is a module, else at
``pkg``. Importing ``a.b`` also runs ``a/__init__``, but that edge is left out: every module
would then sit on a circle through ``minigen/__init__``, which imports the public API.
"""
import ast
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"minigen": os.path.join(ROOT, "minigen"),
            "minigen.kernels": os.path.join(ROOT, "kernels")}     # setup.cfg's package_dir

# Imports that close a circle, as (importer, imported) edges: the search leaves them out, and
# fails on any other circle and on an entry here that no longer occurs. None remain.
KNOWN_CIRCLE_EDGES = []


def _modules():
    """{module name: file path} for every .py file of the packages (``minigen/kernels`` is the
    ``kernels`` folder, so the walk of ``minigen`` skips it)."""
    found = {}
    for package, top in PACKAGES.items():
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__"
                             and not (package == "minigen" and folder == top and d == "kernels"))
            parts = [package] + os.path.relpath(folder, top).split(os.sep)
            parts = [p for p in parts if p != "."]
            for name in sorted(files):
                if name.endswith(".py"):
                    stem = name[:-3]
                    found[".".join(parts if stem == "__init__" else parts + [stem])] = \
                        os.path.join(folder, name)
    return found


def _targets(node, module, is_package, modules):
    """The modules of ours that one import statement of ``module`` names."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    if node.level:
        base = module.split(".")
        base = base[:len(base) - node.level + (1 if is_package else 0)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module
    targets = set()
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        if sub in modules:
            targets.add(sub)
        elif source in modules:
            targets.add(source)
    return targets


def import_graph(modules=None):
    """{module: set of modules it imports} (module docstring)."""
    modules = modules or _modules()
    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        is_package = path.endswith("__init__.py")
        graph[module] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module] |= _targets(node, module, is_package, modules) - {module}
    return graph


def circles(graph):
    """The strongly connected components with more than one module (Tarjan 1972), each as a
    sorted list, and for each one circle through it as a path [a, b, ..., a]."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(component, _path(graph, component)) for component in found]


def _path(graph, component):
    """One circle inside ``component``: a breadth-first walk from its first module back to it."""
    start, inside = component[0], set(component)
    parent, frontier = {start: None}, [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & inside):
                if w == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
                if w not in parent:
                    parent[w] = v
                    following.append(w)
        frontier = following
    return component


def test_the_walk_sees_every_package_and_resolves_relative_imports():
    graph = import_graph()
    assert {"minigen", "minigen.kernels", "minigen.kernels._math", "minigen.density.kde",
            "minigen.metrics", "minigen.metrics._dask", "minigen.blockwise"} <= set(graph)
    assert "minigen.kernels._dispatch" in graph["minigen.kernels._math"]       # from ._dispatch
    assert "minigen._checks" in graph["minigen.blockwise"]                     # from . import
    assert "minigen.density.dask_kde" in graph["minigen.density.kde"]          # in a function


def test_no_import_circles():
    graph = import_graph()
    stale = [edge for edge in KNOWN_CIRCLE_EDGES if edge[1] not in graph.get(edge[0], ())]
    assert not stale, f"known circle edges that no longer occur (remove them): {stale}"
    for importer, imported in KNOWN_CIRCLE_EDGES:
        graph[importer].discard(imported)
    found = [" -> ".join(path) for _, path in circles(graph)]
    assert not found, "import circles:\n" + "\n".join(found)


def test_circles_finds_a_lazy_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [(["a", "b", "c"], ["a", "b", "c", "a"])]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_kernels_import_nothing_from_the_rest_of_minigen():
    graph = import_graph()
    outside = {module: sorted(t for t in targets if not t.startswith("minigen.kernels"))
               for module, targets in graph.items() if module.startswith("minigen.kernels")}
    assert not {m: t for m, t in outside.items() if t}, outside
    for path in _modules().values():
        if path.startswith(PACKAGES["minigen.kernels"] + os.sep):
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            absolute = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                        for alias in node.names] + \
                       [node.module for node in ast.walk(tree)
                        if isinstance(node, ast.ImportFrom) and not node.level]
            assert not [m for m in absolute if m and m.split(".")[0] == "minigen"], path


@pytest.mark.parametrize("module, names", [
    ("minigen.metrics", ["mmd", "mmd2", "sliced_wasserstein", "sliced_wasserstein_loss",
                         "wasserstein_1d", "energy_distance", "median_bandwidth"]),
    ("minigen.blockwise", ["is_dask", "sample", "log_kernel_sum"]),
    ("minigen.density", ["KDE", "GaussianMixture", "KMeans", "PCA", "LatentDensity"]),
    ("minigen.kernels", ["info", "requested_path", "kde", "conv", "softmax", "diffusion"]),
])
def test_public_names_still_import(module, names):
    loaded = importlib.import_module(module)
    assert [name for name in names if not hasattr(loaded, name)] == []
