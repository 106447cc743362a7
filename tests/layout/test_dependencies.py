"""The package layout as a rule: imports flow one way between subpackages, `ingest` and `pallas_kernels` are
leaves, and no two files import each other in a loop (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

# Lower layers first; a module may import its own layer and the layers below it. io, text and merges share
# a layer but do not import each other. The tokenizers sit below the model, which carries one (`model/value.py`).
LAYERS = [
    {"rwkvjax.errors"},
    {"rwkvjax.options", "rwkvjax.atomic", "rwkvjax.extras"},
    {"rwkvjax.text"},
    {"rwkvjax.model"},
    {"rwkvjax.io", "rwkvjax.merges", "rwkvjax.memory"},
    {"rwkvjax.train"},
    {"rwkvjax.eval"},
    {"rwkvjax.serve"},
    {"rwkvjax.api"},
    {"rwkvjax.cli"},
]
MAY_IMPORT_INGEST = {"rwkvjax.train", "rwkvjax.eval", "rwkvjax.serve", "rwkvjax.cli"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ("rwkvjax", "ingest", "pallas_kernels"):
        for f in (REPO / pkg).rglob("*.py"):
            parts = f.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `name` imports anywhere in its file (resolved to the longest known module name)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph():
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def _unit(mod: str) -> str:
    """The layer unit of a module: rwkvjax.<subpackage> or the base module itself."""
    parts = mod.split(".")
    return ".".join(parts[:2]) if parts[0] == "rwkvjax" else parts[0]


def _layer(unit: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if unit in layer), None)


def test_every_rwkvjax_module_has_a_layer():
    for mod in _graph():
        if mod.startswith("rwkvjax.") and mod != "rwkvjax":
            assert _layer(_unit(mod)) is not None, f"{mod} is in no layer of the dependency rule"


def test_imports_flow_one_way_between_subpackages():
    bad = []
    for mod, deps in _graph().items():
        if not mod.startswith("rwkvjax."):
            continue
        unit = _unit(mod)
        for d in deps:
            du = _unit(d)
            if du == unit or du == "pallas_kernels" or d == "rwkvjax":
                continue
            if du == "ingest":
                if unit not in MAY_IMPORT_INGEST:
                    bad.append(f"{mod} -> {d} (only {sorted(MAY_IMPORT_INGEST)} read ingest)")
                continue
            if _layer(du) is None or _layer(du) > _layer(unit) or (_layer(du) == _layer(unit) and du != unit):
                bad.append(f"{mod} -> {d}")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_ingest_and_pallas_kernels_are_leaves():
    for mod, deps in _graph().items():
        if mod.startswith("ingest"):
            assert all(d.startswith("ingest") for d in deps), (mod, deps)
        if mod.startswith("pallas_kernels"):
            assert not deps - {"pallas_kernels"}, (mod, deps)
            src = _modules()[mod].read_text()
            tops = {n.names[0].name.split(".")[0] for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Import)}
            tops |= {n.module.split(".")[0] for n in ast.walk(ast.parse(src))
                     if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
            assert tops <= {"jax", "__future__", "functools", "math", "pallas_kernels"}, (mod, tops)


def test_no_import_cycles_between_files():
    graph = _graph()
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w.startswith("rwkvjax") and "." not in w:
                continue  # the package face re-exports lazily by name
            if w not in index:
                visit(w)
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
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"files importing each other in a loop: {cycles}"
