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


# -- distillation is one call into the application layer from every front end -------------------------
ROOT = Path(labqfl.app.__file__).resolve().parents[2]
#: What only :meth:`labqfl.app.distill.DistillSession.run` and :class:`~labqfl.app.distill.TagSource` do:
#: push tag blocks into the Distiller and finish it, start it, take the clients' logs and the acquisition ID.
DISTILL_LOOP_CALLS = {"push", "finish", "start_from_station", "client_logs", "acquisition_id"}


def _front_end_files() -> list[Path]:
    files = sorted((ROOT / "labqfl" / "cli").rglob("*.py")) + sorted((ROOT / "gui").rglob("*.py"))
    return [*files, ROOT / "labqfl" / "mainjob.py"]


def _distill_loop_calls(path: Path) -> list[str]:
    import ast

    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, recv = node.func.attr, node.func.value
            recv_name = recv.attr if isinstance(recv, ast.Attribute) else getattr(recv, "id", "")
            if attr in DISTILL_LOOP_CALLS or (attr == "start" and "session" in recv_name.lower()):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {recv_name}.{attr}()")
        elif isinstance(node, ast.ImportFrom) and node.module == "labqfl.qkd.pipeline":
            out += [f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name}" for a in node.names if a.name == "Distiller"]
    return out


def test_front_ends_never_run_the_distillation_loop_themselves() -> None:
    """``labqfl distill`` (recording and --live), the GUI's distillation thread and ``labqfl run``
    hand a TagSource to DistillSession.run; none pushes blocks, finishes or starts a Distiller."""
    files = _front_end_files()
    assert {"distill.py", "core.py", "mainjob.py"} <= {p.name for p in files}
    bad = [c for p in files for c in _distill_loop_calls(p)]
    assert not bad, "front ends running the distillation loop themselves:\n" + "\n".join(bad)
    users = [p for p in files if "DistillSession" in p.read_text(encoding="utf-8")]
    assert {p.name for p in users} >= {"distill.py", "mainjob.py"} and any("gui" in p.parts for p in users)
    for p in users:
        text = p.read_text(encoding="utf-8")
        assert "TagSource" in text and ".run(" in text, f"{p.relative_to(ROOT)} distils without DistillSession.run"
