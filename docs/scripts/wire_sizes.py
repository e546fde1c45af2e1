"""Bytes on the wire per simulated second for tags/block and ann/chunks, old encoding vs new.

Reads a LABQFL_NODE_WIRE_LOG recording of `labqfl node up` (either format), decodes each message,
re-encodes it both ways (old: int64 ts + int16 ch, int64 slots; new: labqfl.nodes.wire) and checks the
new one decodes to exactly the same arrays. Usage: python wire_sizes.py <wire dir> <simulated seconds>"""
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from labqfl.nodes.client import split_chunks
from labqfl.nodes.common import read_wire
from labqfl.nodes.detector import chunks_message
from labqfl.nodes.optics import block_fields, block_of
from labqfl.qkd.messaging import Message, decode_message, encode_message

folder, sim_s = Path(sys.argv[1]), float(sys.argv[2])
size = defaultdict(lambda: [0, 0, 0])  # kind/dest -> [old bytes, new bytes, items]
for w in sorted(folder.glob("*.wire")):
    for m in read_wire(w):
        if m.kind == "tags/block":
            b = block_of(m)
            old = Message("tags/block", {"ts": b.timestamps.astype(np.int64), "ch": b.channels.astype(np.int16)})
            new = Message("tags/block", block_fields(b))
            back = block_of(decode_message(encode_message(new)))
            assert np.array_equal(back.timestamps, b.timestamps) and np.array_equal(back.channels, b.channels)
            key, n = "tags/block (optics -> detector)", b.timestamps.size
        elif m.kind == "ann/chunks" and w.name == "detector.wire":
            ch = split_chunks(m)
            parts = [(c.pair, c.dropped, c.ann) for c in ch]
            lo, hi = ch[0].lo, ch[0].hi
            f = dict(chunks_message(lo, hi, parts).fields)
            for k in ("slot_gaps", "slot_big_at", "slot_big"):
                f.pop(k)
            f["slots"] = np.concatenate([c.ann.slots for c in ch])
            old = Message("ann/chunks", f)
            new = chunks_message(lo, hi, parts)
            back = split_chunks(decode_message(encode_message(new)))
            assert all(np.array_equal(x.ann.slots, y.ann.slots) and np.array_equal(x.ann.outcomes, y.ann.outcomes)
                       for x, y in zip(back, ch, strict=True))
            key, n = "ann/chunks (detector -> all clients)", sum(c.ann.slots.size for c in ch)
        else:
            continue
        s = size[key]
        s[0] += len(encode_message(old))
        s[1] += len(encode_message(new))
        s[2] += n
for k, (o, n_, items) in size.items():
    print(f"{k}: {items / sim_s / 1e6:.2f} M items/s; old {o / sim_s / 1e6:.2f} MB/s "
          f"({o / items:.2f} B/item), new {n_ / sim_s / 1e6:.2f} MB/s ({n_ / items:.2f} B/item), ratio {o / n_:.2f}")
