"""Review s38 user F6: a recording distilled into the stores before was refused only after the whole
post-processing. :meth:`Distiller.distilled_before` says, before any data is slotted, which pairs an earlier run of
the acquisition distilled completely (every block of :meth:`Distiller.block_ranges` in the slot ledger at both
ends); an interrupted earlier run leaves its pair unnamed, so the rerun still distils the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from qkdpp_helpers import record_small_station

from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.pipeline import Distiller, DistillSettings

DUR = 0.2
SETTINGS = DistillSettings(block_bits=25_000, params=SecurityParameters(eps_sec=1e-4))  # ~4 blocks in 0.2 s


def _distiller(path: Path, stores: dict[str, Any]) -> tuple[Distiller, Any]:
    from labqfl.sim_backends.recording import read_recording

    from labqfl.contracts.types import acquisition_id
    from labqfl.qkd.pipeline import KeyStoreSink

    rec = read_recording(path)
    cfg = rec.config
    return Distiller(cfg, {c: rec.client_log(c) for c in cfg.client_names}, KeyStoreSink(stores), SETTINGS,
                     acquisition_id=acquisition_id(cfg, rec.epoch)), rec


def _run(path: Path, stores: dict[str, Any]) -> Any:
    d, rec = _distiller(path, stores)
    with rec:
        for b in rec.blocks():
            d.push(b)
        return d.finish(int(DUR * rec.config.laser.rep_rate_hz))["C1-C2"]


def _asked(path: Path, stores: dict[str, Any]) -> tuple[list[str], list[tuple[int, int]]]:
    d, rec = _distiller(path, stores)
    with rec:
        total = int(DUR * rec.config.laser.rep_rate_hz)
        return d.distilled_before(total), d.block_ranges("C1-C2", total)


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    from labqfl.keystore import KeyStore

    return record_small_station(tmp_path, DUR), {n: KeyStore.for_node(n, tmp_path / "data") for n in ("C1", "C2")}


def test_a_completely_distilled_recording_is_named_before_any_data(recorded: Any) -> None:
    path, stores = recorded
    assert _asked(path, stores)[0] == []  # fresh stores
    r = _run(path, stores)
    assert r.n_blocks >= 3 and r.delivered_bits > 0 and r.dropped_bits == 0
    done, ranges = _asked(path, stores)
    assert done == ["C1-C2"]
    # the ranges are those the run cut and claimed, the last ending at the acquisition's end
    claimed = {(a, b) for a, b, _ in stores["C1"].distilled_slots("C1-C2", _distiller(path, stores)[0].acquisition_id)}
    assert set(ranges) == claimed and len(ranges) == r.n_blocks and ranges[-1][1] == int(DUR * 1e8)


def test_an_interrupted_run_leaves_the_rest_to_distil(recorded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path, stores = recorded
    real = Distiller._run_block_protocol
    calls: list[str] = []

    def interrupted(self: Distiller, st: Any, run: Any) -> None:
        calls.append(run.block_id)
        if len(calls) == 2:  # Ctrl-C in the second block: the rest of the recording is not distilled
            raise KeyboardInterrupt
        real(self, st, run)

    monkeypatch.setattr(Distiller, "_run_block_protocol", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(path, stores)
    monkeypatch.setattr(Distiller, "_run_block_protocol", real)
    assert _asked(path, stores)[0] == []
    assert _run(path, stores).delivered_bits > 0  # the rerun distils the rest
    assert _asked(path, stores)[0] == ["C1-C2"]


def test_another_block_size_is_refused_before_any_data(recorded: Any) -> None:
    """A rerun with another block size would be refused at its first block's claim, after slotting and sifting it
    (the whole recording for one block): the same refusal comes before any data now."""
    from labqfl.errors import KeyStoreError

    path, stores = recorded
    _run(path, stores)
    d, rec = _distiller(path, stores)
    d.block_slots["C1-C2"] = d.block_slots["C1-C2"] * 3 // 2  # as --block-bits of another size would give
    with rec, pytest.raises(KeyStoreError, match=r"overlaps slots \[0, \d+\) that an earlier run distilled"):
        d.distilled_before(int(DUR * rec.config.laser.rep_rate_hz))
