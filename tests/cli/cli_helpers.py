"""Result checks shared by the command tests (importable: this folder's conftest puts it on sys.path)."""

from __future__ import annotations

import json
from typing import Any


def json_doc(res: Any) -> dict:
    """A successful invocation's stdout, parsed as a whole: one JSON document."""
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)  # the whole of stdout: one document


def error_line(res: Any) -> str:
    """A failed invocation's one stderr line, ``error: …`` (exit 1). Its stdout is empty, or with ``--json`` one
    JSON document whose ``error`` is that line's text (issue 19)."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 1, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    if res.stdout.strip():
        assert json.loads(res.stdout)["error"] == lines[0].removeprefix("error: "), res.output
    return lines[0]
