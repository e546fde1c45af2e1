"""The GUI's distiller knows its acquisition (issue 19, item 5): block IDs derive from the
acquisition the station reports, so the same raw data cannot be distilled into the key stores a
second time — not by the GUI, not by ``labqfl distill`` / ``labqfl run``."""

from __future__ import annotations

from typing import Any

from labqfl.gui.core import TestbedCore

from labqfl.keystore import KeyStore
from labqfl.qkd.pipeline import Distiller, DistillSettings, KeyStoreSink

BLOCK_BITS = 2000


def test_gui_distillation_is_bound_to_its_acquisition_and_cannot_be_repeated(core: TestbedCore, events) -> None:  # type: ignore[no-untyped-def]
    core.connect().result(60)
    st = core.station
    tagger = st.time_tagger
    real = tagger.stream
    seen: list[Any] = []

    def recorded(duration_s: float, block_duration_s: float | None = None):  # type: ignore[no-untyped-def]
        blocks = real(duration_s, block_duration_s)  # starts the acquisition (new epoch) at once

        def tee():  # type: ignore[no-untyped-def]
            try:
                for blk in blocks:
                    seen.append(blk)
                    yield blk
            finally:
                blocks.close()
        return tee()

    tagger.stream = recorded  # type: ignore[method-assign]
    core.start_distillation(block_bits=BLOCK_BITS, engine="cascade")
    events.wait(lambda: any(p["pairs"]["C1-C2"]["blocks"] >= 1 for p in events.kinds("pairs")), timeout=60)
    core.stop_acquisition()
    events.wait(lambda: ("distillation", False) in events.kinds("busy"), timeout=60)
    assert not [e for e in events.kinds("error")], events.kinds("error")

    acq = st.acquisition_id()  # the station's identity of the acquisition just distilled
    assert acq.startswith(f"{core.config.name}/") and "/epoch-" in acq
    assert {p["acquisition"] for p in events.kinds("pairs")} == {acq}

    # the same raw data again, distilled the way `labqfl run` does (station's logs and ID): every block
    # the GUI distilled is skipped (recorded in both stores' ledgers), nothing is distilled twice
    stores = {n: KeyStore.for_node(n, core.data_dir) for n in core.config.client_names}
    try:
        before = {n: s.accounting() for n, s in stores.items()}
        again = Distiller(core.config, st.client_logs(), KeyStoreSink(stores), DistillSettings(block_bits=BLOCK_BITS),
                          acquisition_id=acq)
        for blk in seen:
            again.push(blk)
        res = again.finish()
        gui = [*events.kinds("pairs")][-1]["pairs"]
        assert {p: r.skipped_blocks for p, r in res.items()} == {p: m["blocks"] for p, m in gui.items()}
        assert all(r.n_blocks == 0 for r in res.values())
        assert {n: s.accounting() for n, s in stores.items()} == before  # nothing added, nothing lost
    finally:
        for s in stores.values():
            s.close()
