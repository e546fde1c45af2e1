"""One definition of each shared formula and constant (issue "Architecture", acceptance; decision
record docs/decisions/0005-layering.md, "One definition of each formula").

Every module of the five source folders is parsed (``ast``, nothing is imported) and searched for
the shapes a copy takes:

- **binary entropy**: a function named like it, or ``log2(1 - x)`` (the second term of
  h(x) = −x log2 x − (1−x) log2(1−x)); home: :func:`labqfl.qkd.finite_key.binary_entropy`;
- **speed of light / Planck constant**: a number whose digits are c = 2.99792458·10^k or
  h = 6.62607015·10^k in any unit; home: :mod:`labqfl.physics`;
- **loop delay** n·ΣL/c: a read of ``fiber_refractive_index``; home: :func:`labqfl.physics.loop_delay_ps`;
- **engine names**: a literal tuple, list or set holding both ``"cascade"`` and ``"ldpc"``; home:
  :data:`labqfl.contracts.types.ENGINES`;
- **matched-test error count**: a slice through the basis diagonal of a ``PairCounts``
  (``counts.errors_x2[:, :, b, b]``: every intensity cell of one basis, the unequal-intensity
  cells included); home: :meth:`labqfl.contracts.types.PairCounts.matched_test_counts`;
- **per-channel click count**: ``np.unique`` / ``np.bincount`` / ``np.count_nonzero`` over a
  ``.channels`` array; home: :meth:`labqfl.instruments.base.TagBlock.channel_counts`.

A find outside its home fails the test; no copy is excused.
"""

from __future__ import annotations

import ast
import functools
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("labqfl", "drivers", "sim_backends", "calibration", "gui")

#: what → the one file allowed to define it
HOME = {
    "binary entropy": "labqfl/qkd/finite_key.py",
    "speed of light": "labqfl/physics.py",
    "Planck constant": "labqfl/physics.py",
    "loop delay": "labqfl/physics.py",
    "engine names": "labqfl/contracts/types.py",
    "matched-test error count": "labqfl/contracts/types.py",
    "per-channel click count": "labqfl/instruments/base.py",
}

#: (what, file) → why that copy is still there; each entry must still match a find.
ENTROPY_NAMES = {"binary_entropy", "h2", "h_2", "h_bin", "entropy_bin", "shannon_binary_entropy"}
MANTISSAS = {"speed of light": 2.99792458, "Planck constant": 6.62607015}
COUNTERS = {"unique", "bincount", "count_nonzero"}


def _mantissa(v: float) -> float:
    return abs(v) / 10.0 ** math.floor(math.log10(abs(v)))


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _basis_diagonal_slice(node: ast.Subscript) -> bool:
    """``x.errors_x2[:, :, b, b]`` / ``x.clicks[..., b, b]``: a slice over the intensity cells of
    one basis pair on the diagonal."""
    idx = node.slice
    if not (isinstance(node.value, ast.Attribute) and node.value.attr in {"errors_x2", "clicks"}
            and isinstance(idx, ast.Tuple) and len(idx.elts) >= 3):
        return False
    *cells, a, b = idx.elts
    return (isinstance(a, ast.Name) and isinstance(b, ast.Name) and a.id == b.id
            and any(isinstance(c, ast.Slice) or (isinstance(c, ast.Constant) and c.value is Ellipsis) for c in cells))


def _reads_channels(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "channels" for n in ast.walk(node))


def finds(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(what, line) for every shape of a copy in ``tree`` (module docstring)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.lower().lstrip("_") in ENTROPY_NAMES:
            yield "binary entropy", node.lineno
        elif isinstance(node, ast.FunctionDef) and node.name == "matched_test_counts":
            yield "matched-test error count", node.lineno
        elif isinstance(node, ast.Subscript) and _basis_diagonal_slice(node):
            yield "matched-test error count", node.lineno
        elif isinstance(node, ast.Call):
            name = _name(node.func)
            if (name == "log2" and node.args and isinstance(node.args[0], ast.BinOp)
                    and isinstance(node.args[0].op, ast.Sub) and isinstance(node.args[0].left, ast.Constant)
                    and node.args[0].left.value == 1):
                yield "binary entropy", node.lineno
            elif name in COUNTERS and any(_reads_channels(a) for a in node.args):
                yield "per-channel click count", node.lineno
        elif (isinstance(node, ast.Constant) and isinstance(node.value, int | float)
              and not isinstance(node.value, bool) and node.value != 0 and math.isfinite(node.value)):
            m = _mantissa(float(node.value))
            for what, want in MANTISSAS.items():
                if abs(m - want) <= 1e-4 * want:
                    yield what, node.lineno
        elif isinstance(node, ast.Attribute) and node.attr == "fiber_refractive_index" and isinstance(node.ctx, ast.Load):
            yield "loop delay", node.lineno
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            strings = {e.value for e in node.elts if isinstance(e, ast.Constant)}
            if {"cascade", "ldpc"} <= strings:
                yield "engine names", node.lineno


@functools.cache
def _all_finds(parse: Callable[[Path], ast.Module]) -> list[tuple[str, str, int]]:
    out = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            out += [(what, rel, line) for what, line in finds(parse(path))]
    return out


def test_each_formula_and_constant_is_defined_once(parse_source) -> None:
    found = _all_finds(parse_source)
    copies = [f"{rel}:{line}: a copy of the {what} (its one definition: {HOME[what]})"
              for what, rel, line in found if rel != HOME[what]]
    assert not copies, "import the one definition instead:\n" + "\n".join(copies)
    homes = {(what, rel) for what, rel, _ in found if rel == HOME[what]}
    assert homes == set(HOME.items()), f"a definition left its home: {sorted(set(HOME.items()) - homes)}"


@pytest.mark.parametrize(("what", "source"), [
    ("binary entropy", "def binary_entropy(p):\n    return 0.0\n"),
    ("binary entropy", "def _h2(p):\n    return 0.0\n"),
    ("binary entropy", "h = -q * np.log2(q) - (1 - q) * np.log2(1 - q)\n"),
    ("binary entropy", "h = -q * math.log2(q) - (1.0 - q) * math.log2(1.0 - q)\n"),
    ("speed of light", "C = 299_792_458.0\n"),
    ("speed of light", "C_KM_S = 2.99792458e5\n"),
    ("speed of light", "C_M_PER_PS = 2.998e-4\n"),
    ("Planck constant", "H = 6.626e-34\n"),
    ("loop delay", "t = cfg.loop.fiber_refractive_index * sum(cfg.loop.segments_km) * 1e3 / c\n"),
    ("engine names", "ENGINES = ('cascade', 'ldpc')\n"),
    ("engine names", "x: Literal['ldpc', 'cascade']\n"),
    ("matched-test error count", "errs = cts.errors_x2[:, :, bb, bb].copy()\n"),
    ("matched-test error count", "n = counts.clicks[..., b, b].sum()\n"),
    ("per-channel click count", "u, n = np.unique(block.channels, return_counts=True)\n"),
    ("per-channel click count", "n = np.count_nonzero(blk.channels == ch)\n"),
])
def test_the_scan_recognises_a_copy(what: str, source: str) -> None:
    """The check is not vacuous: each of these shapes (most of them found in labqfl before issue
    20) is reported."""
    assert what in {w for w, _ in finds(ast.parse(source))}


def test_the_scan_leaves_other_code_alone() -> None:
    source = ("t = blk.timestamps[blk.channels == ch]\nBLOCKS = (1e8, 3e8, 1e9)\nengine = 'cascade'\n"
              "depth = np.ceil(np.log2(np.maximum(k, 1)))\ncor = math.log2(2.0 / eps_cor)\n"
              "q = counts.errors_x2[k0, k0, b0, b0] / 2.0 / n_x\n")
    assert list(finds(ast.parse(source))) == []


def _engine_defaults(tree: ast.AST) -> Iterator[int]:
    """Where a default error-correction engine is spelled out: ``engine: str = "cascade"`` (a field),
    ``def f(engine="cascade")`` or ``typer.Option("cascade", "--engine", …)``."""
    def literal(node: ast.expr | None) -> bool:
        return isinstance(node, ast.Constant) and node.value in ("cascade", "ldpc")

    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and "engine" in node.target.id \
                and literal(node.value):
            yield node.lineno
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults + node.args.kw_defaults
            yield from (node.lineno for a, d in zip(args, defaults, strict=True) if "engine" in a.arg and literal(d))
        elif isinstance(node, ast.Call) and _name(node.func) == "Option" and node.args and literal(node.args[0]):
            yield node.lineno


def test_the_default_engine_is_named_once(parse_source) -> None:
    """Every settings object and front end takes its default engine from
    :data:`labqfl.contracts.types.DEFAULT_ENGINE`, so changing the default is one edit."""
    spelled = [f"{path.relative_to(ROOT).as_posix()}:{line}"
               for folder in FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))
               for line in _engine_defaults(parse_source(path))]
    assert not spelled, "use labqfl.contracts.types.DEFAULT_ENGINE:\n" + "\n".join(spelled)
    recognised = 'engine: str = "cascade"\ndef f(engine: str = "ldpc"): ...\nx = typer.Option("cascade", "--engine")\n'
    assert len(list(_engine_defaults(ast.parse(recognised)))) == 3
