"""The station's declared intensity calibration uncertainty reaches every distilled block (review s36 physics F2,
docs/protocol.md (P10)): the two ends analyse with the band (less key than with the μ taken as exact, the same
length at both ends) and the stored provenance records the δ, which the information-theoretic flag needs."""

from __future__ import annotations

from labqfl.keystore import KeyStore
from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.pipeline import DistillSettings, KeyStoreSink, distill_stream

PAIR = "C1-C2"
DUR = 0.1  # conftest.SMALL_ACQUISITION_S


def _distil(acq, cfg, tmp_path):  # type: ignore[no-untyped-def]
    _, blocks, logs, acq_id = acq
    stores = {n: KeyStore.for_node(n, tmp_path) for n in ("C1", "C2")}
    res, _ = distill_stream(cfg, blocks, logs, KeyStoreSink(stores),
                            DistillSettings(block_bits=1_000_000, params=SecurityParameters(eps_sec=1e-4)),
                            total_slots=int(DUR * cfg.laser.rep_rate_hz), acquisition_id=acq_id)
    blk = res[PAIR].blocks[0]
    meta = next(b["meta"] for b in stores["C1"].blocks(PAIR) if b["block_id"] == blk.block_id)
    return blk, meta


def test_a_declared_band_costs_key_and_is_recorded_with_the_block(small_acquisition, tmp_path) -> None:
    cfg = small_acquisition[0]
    exact, meta0 = _distil(small_acquisition, cfg, tmp_path / "exact")
    banded_cfg = cfg.model_copy(deep=True)
    for c in banded_cfg.clients:
        c.intensity_rel_uncertainty = 0.1
    banded, meta1 = _distil(small_acquisition, banded_cfg, tmp_path / "banded")
    assert not exact.abort and not banded.abort
    assert banded.sifted_bits == exact.sifted_bits  # (reconciliation is randomised: its leak differs a little)
    assert 0 < banded.final_key_bits < exact.final_key_bits
    assert banded.report["phase_error_upper"] > exact.report["phase_error_upper"]
    assert meta0["provenance"]["intensity_rel_uncertainty"] is None
    assert meta1["provenance"]["intensity_rel_uncertainty"] == 0.1
