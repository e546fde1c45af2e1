"""No function over 80 lines outside numeric kernels (issue "Architecture", acceptance).

Numeric kernels are the Numba-compiled functions (``@numba.njit`` / ``@nb.njit``): their loops are
kept in one piece on purpose (one compiled unit, no call overhead per element). The slow reference
implementations that the tests compare the kernels with are listed below by name, each with why it
stays in one piece. Anything else over 80 lines fails this test.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("labqfl", "gui", "calibration", "drivers", "sim_backends")
MAX_LINES = 80

#: (module path, function name) → why it stays one function
EXEMPT: dict[tuple[str, str], str] = {
    ("labqfl/qkd/cascade.py", "cascade_reference"):
        "the readable pure-Python reference of the Cascade kernel, written to follow the published "
        "protocol step by step; the kernel tests compare against it",
}


def _is_kernel(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any("jit" in ast.unparse(d) for d in fn.decorator_list)


def _long_functions(parse: Callable[[Path], ast.Module]) -> list[tuple[str, str, int]]:
    out = []
    for pkg in PACKAGES:
        base = ROOT / pkg if (ROOT / pkg).is_dir() else ROOT / "labqfl" / pkg
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(parse(path)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not _is_kernel(node):
                    n = (node.end_lineno or node.lineno) - node.lineno + 1
                    if n > MAX_LINES and (rel, node.name) not in EXEMPT:
                        out.append((rel, node.name, n))
    return out


def test_no_function_over_80_lines_outside_numeric_kernels(parse_source) -> None:
    long = _long_functions(parse_source)
    assert not long, "functions over 80 lines (split them into named steps): " + ", ".join(
        f"{p}:{name} ({n} lines)" for p, name, n in long)


def test_every_exemption_still_exists_and_is_long(parse_source) -> None:
    """An exemption whose function was split or removed must leave the list."""
    found = {}
    for (rel, name) in EXEMPT:
        tree = parse_source(ROOT / rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == name:
                found[(rel, name)] = (node.end_lineno or node.lineno) - node.lineno + 1
    assert set(found) == set(EXEMPT)
    assert all(n > MAX_LINES for n in found.values()), found
