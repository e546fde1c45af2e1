"""The application layer is Qt-free and free of CLI code (issue 20 item 1): importing it, and every
module in it, pulls in neither typer/click/rich nor PySide6 nor labqfl's own front ends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import labqfl.app

FORBIDDEN = ("typer", "click", "rich", "PySide6", "pyqtgraph", "labqfl.cli", "labqfl.gui")


def test_importing_the_application_layer_loads_no_front_end_code() -> None:
    mods = sorted(f"labqfl.app.{p.stem}" for p in Path(labqfl.app.__file__).parent.glob("*.py") if p.stem != "__init__")
    code = ("import sys\n" + "".join(f"import {m}\n" for m in mods)
            + f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"labqfl.app imports front-end code: {out.stdout.strip()}"
    assert {"labqfl.app.distill", "labqfl.app.station", "labqfl.app.training"} <= set(mods)
