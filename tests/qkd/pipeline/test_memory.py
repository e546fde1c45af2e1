"""Memory the pipeline holds per pair until a block closes (issue 23 item 6).

The block-size rule makes a one-minute run one block per pair, so whatever the two ends keep per
announced slot until the block closes grows with the whole acquisition. Before the compaction
both ends kept every announcement as raw int64/uint8 transcript entries, every held-back sifting
message as raw bytes and every sifted key bit as one byte: about 43 bytes per sifted bit on the
default station. Now the entries are compressed and, beyond a bound, spooled to a temporary file
(:mod:`labqfl.qkd.spool`), and the key bits are packed.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed

from labqfl.config import load_station_config
from labqfl.contracts.types import Announcements
from labqfl.qkd import spool
from labqfl.qkd.pipeline import Distiller, DistillSettings, MemorySink
from labqfl.qkd.spool import TranscriptSpool, pack_entry, unpack_entry
from labqfl.qkd.twoparty import announcement_entry

_SIM_S = 0.25


@pytest.fixture(scope="module")
def acquisition() -> tuple[object, list[object], dict[str, object]]:
    """0.25 s of the default station (seeded clients), tags generated before any measurement."""
    cfg = load_station_config(None)
    d = cfg.model_dump()
    for c in d["clients"]:
        c["randomness"] = "seeded"
    d["simulation"]["qrng_epoch_base"] = 0
    cfg = type(cfg).model_validate(d)
    tb = SagnacTestbed(cfg)
    blocks = list(tb.stream(_SIM_S))
    return cfg, blocks, tb.client_logs()


def _held_per_sifted_bit(acquisition: tuple[object, list[object], dict[str, object]]) -> tuple[float, int, Distiller]:
    """Bytes the Distiller's pair ends allocate and keep while one open block per pair fills
    (traced by tracemalloc: numpy arrays and bytes alike), per sifted bit."""
    cfg, blocks, logs = acquisition
    # blocks far longer than the acquisition: nothing closes, everything sifted stays held
    d = Distiller(cfg, logs, MemorySink(), DistillSettings(block_slots=10**12), rng=np.random.default_rng(1))  # type: ignore[arg-type]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for blk in blocks:
            d.push(blk)  # type: ignore[arg-type]
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    bits = sum(st.n_bits for st in d.pairs.values())
    assert bits > 100_000  # the acquisition sifted enough for the ratio to mean something
    return held / bits, bits, d


def test_held_bytes_per_sifted_bit_bounded(acquisition: tuple[object, list[object], dict[str, object]]) -> None:
    # before the compaction: ≈ 43 bytes per sifted bit (raw transcript entries and messages at
    # both ends, one byte per key bit); compressed now: ≈ 8
    per_bit, bits, d = _held_per_sifted_bit(acquisition)
    assert per_bit < 16, f"{per_bit:.1f} bytes held per sifted bit ({bits} bits)"
    reported = sum(d.held_bytes().values())
    assert 0 < reported <= per_bit * bits * 1.1  # the Distiller's own account is no larger than what is traced


def test_spooled_transcripts_keep_memory_flat(acquisition: tuple[object, list[object], dict[str, object]],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With every held-back entry spooled to the temporary file, what stays in memory is the
    packed key bits (1/8 byte per sifted bit and end) and chunk-sized temporaries."""
    monkeypatch.setattr(spool, "DEFAULT_RAM_BYTES", 0)
    per_bit, bits, d = _held_per_sifted_bit(acquisition)
    assert per_bit < 2, f"{per_bit:.2f} bytes held per sifted bit with spooling ({bits} bits)"
    assert all(st.end_i.tx.held_bytes() == 0 for st in d.pairs.values())


def test_spool_gives_back_exact_entries_in_order() -> None:
    rng = np.random.default_rng(3)
    entries: list[tuple[int, bytes]] = []
    for k in range(40):
        n = int(rng.integers(0, 2000))
        slots = np.sort(rng.choice(1 << 40, n, replace=False)).astype(np.int64)
        ann = Announcements("C1-C2", slots, rng.integers(1, 4, n).astype(np.uint8))
        entries.append((2, announcement_entry(ann, int(k) << 30, (int(k) + 1) << 30, 12345)))
        entries.append((k % 2, rng.bytes(int(rng.integers(0, 500)))))
    entries.append((0, b"ann/" + bytes(40)))  # looks like an announcement entry, is not one
    entries.append((1, b"ann/" + np.array([0, 1, 2, 1, 1], "<i8").tobytes() + (-5).to_bytes(8, "little", signed=True) + b"\x02"))
    for e in entries:
        assert unpack_entry(pack_entry(e[1])) == e[1]
    for ram in (0, 10_000, 1 << 30):
        sp = TranscriptSpool(ram_bytes=ram)
        for d_, p in entries:
            sp.append(d_, p)
        assert len(sp) == len(entries)
        assert (sp.spilled_bytes > 0) == (ram < 10**9)
        assert list(sp.drain()) == entries
        assert len(sp) == 0 and sp.held_bytes == 0 and sp.spilled_bytes == 0 and list(sp.drain()) == []
    sp = TranscriptSpool(ram_bytes=0)
    sp.append(0, b"x")
    sp.clear()
    assert list(sp.drain()) == []
    with pytest.raises(ValueError, match="ram_bytes"):
        TranscriptSpool(ram_bytes=-1)
