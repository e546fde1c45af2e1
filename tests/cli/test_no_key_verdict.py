"""The one error line of a distillation that gave no key says why, also when every block was skipped because
the recording had been distilled into these stores before (docs review s34 L3: a second ``labqfl distill
REC.h5`` printed only "no block distilled (457,611 sifted bits)", under --json nothing else on stderr)."""

from __future__ import annotations

from labqfl.cli.common import judge_key


def test_a_recording_distilled_again_names_the_earlier_run() -> None:
    out = {"pairs": {"C1-C2": {"final_key_bits": 0, "abort_reasons": [], "sifted_bits": 457_611,
                               "skipped_blocks": 3}}}
    judge_key(out)
    assert out["error"] == ("no pair produced key: C1-C2: already distilled into these stores by an earlier run of "
                            "this recording: its key is there (`labqfl keys status`), or its raw bits were spent; "
                            "nothing new to store")


def test_a_pair_without_skipped_blocks_reads_as_before() -> None:
    out = {"pairs": {"C1-C2": {"final_key_bits": 0, "abort_reasons": [], "sifted_bits": 10}, "C1-C3": {
        "final_key_bits": 5, "abort_reasons": []}}}
    judge_key(out)
    assert out["warning"] == "no key from 1 of 2 pairs: C1-C2: no block distilled (10 sifted bits)"
