"""The tests mirror the code (issue "Architecture", deliverable 6): one folder per package, and no
test file whose name repeats its folder's (``tests/gui/test_gui_x.py``)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
#: the top-level source folders installed as labqfl.<name> (setup.py's package-dir mapping)
SOURCE_FOLDERS = ("drivers", "sim_backends", "calibration", "gui")
#: labqfl packages without code of their own to test
NO_TESTS = {"data"}  # labqfl/data: the embedded station file, tested through labqfl.config


def _packages() -> set[str]:
    inside = {p.parent.name for p in (ROOT / "labqfl").glob("*/__init__.py")}
    return (inside - NO_TESTS) | set(SOURCE_FOLDERS)


def test_every_package_has_its_test_folder() -> None:
    missing = sorted(p for p in _packages() if not (TESTS / p).is_dir())
    assert not missing, f"packages without a tests/<package>/ folder: {missing}"


def test_every_test_folder_names_a_package_or_module() -> None:
    """A top-level test folder is a package, a module of the core (``tests/station`` for
    ``labqfl/station.py``), or ``core`` (the core's small modules and the project-wide checks)."""
    modules = {p.stem for p in (ROOT / "labqfl").glob("*.py")}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and any(p.rglob("test_*.py"))}
    stray = sorted(folders - _packages() - modules - {"core"})
    assert not stray, f"test folders that name no package or module of labqfl: {stray}"


def test_no_test_file_repeats_its_folder_name() -> None:
    bad = sorted(str(p.relative_to(ROOT)) for p in TESTS.rglob("test_*.py")
                 if p.stem == f"test_{p.parent.name}" or p.stem.startswith(f"test_{p.parent.name}_"))
    assert not bad, f"test files whose name repeats their folder's: {bad}"
