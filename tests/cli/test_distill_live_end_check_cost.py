"""Review s37 lab3 L9: the error of a live distillation refused by its end-of-acquisition check says what it left in
the key stores. ``labqfl distill --live`` (and ``labqfl run --in-process``) keep the key blocks already distilled from
the refused acquisition and drop the rest; the line said only that in general ("any key block already distilled …
stays stored"), not which. It now ends with the key blocks stored per pair ("key blocks stored from it before it
ended: C1-C2 2, …", or "no key block had been stored from it"), which this test checks against the stores.

``labqfl distill --live`` of 1.5 s on examples/station_pyvisa_sim.toml (real drivers on pyvisa-sim, simulated tagger)
with 150 000-bit blocks (most pairs store a block before the end), one fault added to what the end check reads (a false latch alarm's stand-in)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from cli_helpers import error_line
from typer.testing import CliRunner

import labqfl.app.acquire as acq_mod
from labqfl.cli import app
from labqfl.keystore import KeyStore

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                reason="pyvisa-py (the 'hardware' extra) is not installed")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "station_pyvisa_sim.toml"


def test_a_refused_live_distillation_names_the_key_blocks_it_stored(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real = acq_mod.acquisition_faults
    monkeypatch.setattr(acq_mod, "acquisition_faults", lambda *a: [*real(*a), "D0: channel 1 counted nothing (injected)"])
    data, runs = tmp_path / "data", tmp_path / "runs"
    r = CliRunner().invoke(app, ["distill", "--live", "--config", str(EXAMPLE), "--duration", "1.5",
                                 "--block-bits", "150000", "--data-dir", str(data), "--out", str(runs)])
    line = error_line(r)
    assert "at its end the instruments no longer read as armed: D0: channel 1 counted nothing (injected)" in line
    assert "Refused: any key block already distilled from this acquisition stays stored" in line, line
    (run,) = [p.name for p in runs.iterdir()]
    stored: dict[str, int] = {}
    for node in ("C1", "C2", "C3", "C4"):
        st = KeyStore.for_node(node, data, create=False)
        try:
            for b in st.blocks():
                # each pair's distilled key blocks once, at its Ci (not the pre-shared or authentication refills)
                if b["run_id"] == run and b["pair"].startswith(f"{node}-") and "kind" not in b["meta"]:
                    stored[b["pair"]] = stored.get(b["pair"], 0) + 1
        finally:
            st.close()
    assert stored, "the example's 1.5 s give some pairs key blocks before the end: the case to show"
    m = re.search(r"; key blocks stored from it before it ended: (.*)$", line)
    assert m is not None, line
    said = {p: int(n) for p, n in (x.split(" ") for x in m.group(1).split(", "))}
    assert said == stored, (said, stored)
