"""No documented ``labqfl gui --screenshot`` command writes into ``docs/screenshots/`` (review s36 user F24:
docs/gui.md's example ``labqfl gui --screenshot docs/screenshots/gui.png …`` overwrote this repository's tracked
pictures when a user copied it from the repository's root)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_documented_screenshot_command_writes_into_the_tracked_pictures() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    targets = [(p.relative_to(ROOT), m.group(1)) for p in docs
               for m in re.finditer(r"--screenshot[ =](\S+)", p.read_text(encoding="utf-8"))]
    assert targets, "no documented --screenshot command found"
    bad = [(str(p), t) for p, t in targets if "docs/screenshots" in t or t.startswith("screenshots/")]
    assert not bad, bad
