"""The allowed import graph of labqfl (ARCHITECTURE.md "Rules between layers"; decision record
docs/decisions/0005-layering.md).

Every module of the five source folders is parsed (``ast``, nothing is imported) and each of its
``import labqfl…`` / ``from labqfl… import`` statements — at module level, inside functions, under
``TYPE_CHECKING`` — and each ``importlib.import_module("labqfl…")`` with a literal name is an edge.
Three rules:

1. **Front ends on top.** Nothing imports ``labqfl.cli`` or ``labqfl.gui`` except the CLI, the GUI
   and ``__main__`` modules (entry points, in the top layer).
2. **Real or simulated is the Station's business.** ``labqfl.drivers`` and ``labqfl.sim_backends``
   are imported only by the Station, the node processes (``labqfl.nodes``: each node opens its
   own instruments), the benchmarks, and themselves.
3. **Layers point down.** Each module belongs to a layer (:data:`LAYERS`, longest prefix wins); it
   may import its own layer and those below, never one above.

:data:`EXCEPTIONS` lists the edges that break a rule today, each with its reason; keep it short.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: import name → source folder (setup.py's package-dir mapping)
FOLDERS = {
    "labqfl": "labqfl",
    "labqfl.drivers": "drivers",
    "labqfl.gui": "gui",
    "labqfl.calibration": "calibration",
    "labqfl.sim_backends": "sim_backends",
}

#: Layer of a module, by longest matching prefix; lower layers never import higher ones.
LAYERS: dict[str, int] = {
    # foundation: no labqfl imports of their own beyond these
    "labqfl": 0, "labqfl.errors": 0, "labqfl.serialize": 0, "labqfl.physics": 0,
    "labqfl.log": 1,
    "labqfl.config": 2,
    "labqfl.instruments": 3,
    # the shared contracts: what the simulator, the Station, the nodes and the pipeline agree on
    "labqfl.contracts": 4, "labqfl.contracts.types": 4, "labqfl.contracts.channel_model": 4,
    "labqfl.contracts.schedule": 4,
    "labqfl.modulation": 4, "labqfl.provenance": 4,
    # implementations of the instrument interfaces
    "labqfl.drivers": 5, "labqfl.sim_backends": 5,
    "labqfl.station": 6,
    # libraries
    "labqfl.qkd": 7,
    "labqfl.keystore": 8,
    "labqfl.net": 9, "labqfl.fl": 9, "labqfl.runs": 9,
    "labqfl.planning": 10, "labqfl.calibration": 10, "labqfl.nodes": 10, "labqfl.report": 10,
    # use cases (the application layer) and whole jobs
    "labqfl.app": 11, "labqfl.mainjob": 11, "labqfl.bench": 11,
    # front ends
    "labqfl.cli": 12, "labqfl.gui": 12,
}

FRONT_ENDS = ("labqfl.cli", "labqfl.gui")
IMPLEMENTATIONS = ("labqfl.drivers", "labqfl.sim_backends")
IMPLEMENTATION_USERS = ("labqfl.station", "labqfl.nodes", "labqfl.bench")

#: (importing module, imported module) → why the edge is allowed for now.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("labqfl.config", "labqfl.station"):
        "parse_station_config checks real roles against the drivers' declarations, which the Station "
        "owns (lazy import; the Station is the only door to labqfl.drivers)",
    ("labqfl.drivers._link", "labqfl.sim_backends.visa_models"):
        "the VISA link opens pyvisa-sim sessions ('…@sim') and attaches the Python device models their YAML "
        "cannot express (lazy, '@sim' only), so that no driver branches on the simulator",
    ("labqfl.sim_backends.recording", "labqfl.keystore"):
        "a CSPRNG client's private choice log lives in the data dir, whose location the key store defines "
        "(default_data_dir)",
}


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def modules() -> Iterator[tuple[str, Path]]:
    """(import name, file) of every module of the five source folders."""
    for pkg, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if pkg == "labqfl" and parts[0] in {f for p, f in FOLDERS.items() if p != "labqfl"}:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join([pkg, *parts]), path


def imports_of(name: str, path: Path, parse: Callable[[Path], ast.Module]) -> Iterator[tuple[str, int]]:
    """(imported labqfl module, line) for every import statement and literal import_module call
    (``parse``: the session's ``parse_source``)."""
    tree = parse(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield mod, node.lineno
            for alias in node.names:  # ``from labqfl.gui import plots`` imports labqfl.gui.plots
                yield f"{mod}.{alias.name}", node.lineno
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name)
              and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.args[0].value, node.lineno


def layer(name: str) -> int | None:
    if name.endswith(".__main__"):  # an entry point (``python -m …``) is a front end
        return max(LAYERS.values())
    best = max((p for p in LAYERS if _is_under(name, p)), key=len, default=None)
    return None if best is None else LAYERS[best]


@functools.cache
def edges(parse: Callable[[Path], ast.Module]) -> list[tuple[str, str, int, Path]]:
    known = {n for n, _ in modules()}
    out: set[tuple[str, str, int, Path]] = set()
    for name, path in modules():
        for target, line in imports_of(name, path, parse):
            if not _is_under(target, "labqfl"):
                continue
            # ``from pkg import name``: keep the submodule if it is one, else the package
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name:
                out.add((name, target, line, path))
    return sorted(out)


def _excepted(src: str, dst: str) -> bool:
    return any(_is_under(src, a) and _is_under(dst, b) for a, b in EXCEPTIONS)


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_every_module_has_a_layer() -> None:
    missing = sorted({n for n, _ in modules() if layer(n) is None})
    assert not missing, f"modules without a layer: {missing}; add their package to LAYERS in {__file__}"


def test_nothing_imports_the_front_ends(parse_source) -> None:
    bad = [f"{_where(p, ln)}: {src} imports {dst}" for src, dst, ln, p in edges(parse_source)
           if any(_is_under(dst, f) for f in FRONT_ENDS)
           and not any(_is_under(src, f) for f in FRONT_ENDS) and not src.endswith(".__main__")
           and not _excepted(src, dst)]
    assert not bad, "only the CLI, the GUI and __main__ may import labqfl.cli / labqfl.gui:\n" + "\n".join(bad)


def test_drivers_and_simulator_only_through_the_station_or_the_nodes(parse_source) -> None:
    bad = []
    for src, dst, ln, p in edges(parse_source):
        impl = next((i for i in IMPLEMENTATIONS if _is_under(dst, i)), None)
        if impl is None or _is_under(src, impl) or _excepted(src, dst):
            continue
        if not any(_is_under(src, u) for u in IMPLEMENTATION_USERS):
            bad.append(f"{_where(p, ln)}: {src} imports {dst}")
    assert not bad, ("labqfl.drivers and labqfl.sim_backends are reached only through the Station "
                     "(or a node process, or a benchmark):\n" + "\n".join(bad))


def test_layers_point_down(parse_source) -> None:
    bad = []
    for src, dst, ln, p in edges(parse_source):
        ls, ld = layer(src), layer(dst)
        if ls is not None and ld is not None and ld > ls and not _excepted(src, dst):
            bad.append(f"{_where(p, ln)}: {src} (layer {ls}) imports {dst} (layer {ld})")
    assert not bad, "imports must point down (LAYERS in this file):\n" + "\n".join(bad)


def test_every_exception_is_still_needed(parse_source) -> None:
    used = {(a, b) for a, b in EXCEPTIONS
            if any(_is_under(s, a) and _is_under(d, b) for s, d, _, _ in edges(parse_source))}
    assert used == set(EXCEPTIONS), f"exceptions no longer needed (remove them): {sorted(set(EXCEPTIONS) - used)}"


@pytest.mark.parametrize(("src", "dst"), [
    ("labqfl.qkd.pipeline", "labqfl.cli.common"),
    ("labqfl.cli.acquire", "labqfl.sim_backends.analysis"),
    ("labqfl.sim_backends.recording", "labqfl.qkd.pipeline"),
    ("labqfl.sim_backends.recording", "labqfl.runs"),
    ("labqfl.station", "labqfl.qkd.pipeline"),
])
def test_the_rules_catch_a_forbidden_edge(src: str, dst: str) -> None:
    """The checks are not vacuous: each of these edges (all present before issue 20) breaks a rule."""
    front = any(_is_under(dst, f) for f in FRONT_ENDS) and not any(_is_under(src, f) for f in FRONT_ENDS)
    impl = any(_is_under(dst, i) for i in IMPLEMENTATIONS) and not any(_is_under(src, u) for u in IMPLEMENTATION_USERS)
    ls, ld = layer(src), layer(dst)
    assert front or impl or (ls is not None and ld is not None and ld > ls)
