"""The wheel installs everything under the single namespace ``labqfl`` (design-card layout)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy so a stale ./build folder can never leak old files into the wheel.
    src = tmp_path_factory.mktemp("src") / "labqfl"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "runs", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "docs"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True, capture_output=True, text=True,
    )
    (whl,) = out.glob("labqfl-*.whl")
    return whl


def test_only_labqfl_namespace_is_installed(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"labqfl"}
    for sub in ("drivers", "gui", "calibration", "sim_backends"):
        assert f"labqfl/{sub}/__init__.py" in names, sub
    assert "labqfl/data/default_station.toml" in names


def test_subpackages_import_under_namespace():
    import importlib

    for sub in ("drivers", "gui", "calibration", "sim_backends"):
        mod = importlib.import_module(f"labqfl.{sub}")
        assert Path(mod.__file__).parent.name == sub
