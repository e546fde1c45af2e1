"""CPU (process_time) of building + encoding and decoding + reading tags/block and ann/chunks, old
format vs new, on the messages of a LABQFL_NODE_WIRE_LOG recording (usage: wire_cpu.py <dir> <sim s>).
Alternates old/new passes 5 times; prints the per-pass minimum per simulated second."""
import sys
import time
from pathlib import Path

import numpy as np

from labqfl.nodes.client import split_chunks
from labqfl.nodes.common import read_wire
from labqfl.nodes.detector import chunks_message
from labqfl.nodes.optics import block_fields, block_of
from labqfl.qkd.messaging import Message, decode_message, encode_message

folder, sim_s = Path(sys.argv[1]), float(sys.argv[2])
blocks, anns = [], []
for m in read_wire(folder / "detector.wire"):
    if m.kind == "tags/block":
        blocks.append(block_of(m))
    elif m.kind == "ann/chunks":
        ch = split_chunks(m)
        anns.append((ch[0].lo, ch[0].hi, [(c.pair, c.dropped, c.ann) for c in ch]))


def old_tags():
    for b in blocks:
        raw = encode_message(Message("tags/block", {"ts": np.ascontiguousarray(b.timestamps, np.int64),
                                                    "ch": np.ascontiguousarray(b.channels, np.int16)}))
        r = decode_message(raw)
        np.asarray(r.get("ts"), np.int64), np.asarray(r.get("ch"), np.int16)


def new_tags():
    for b in blocks:
        block_of(decode_message(encode_message(Message("tags/block", block_fields(b)))))


def old_ann():
    for lo, hi, parts in anns:
        f = dict(chunks_message(lo, hi, parts).fields)
        for k in ("slot_gaps", "slot_big_at", "slot_big"):
            f.pop(k)
        t = time.process_time()
        f["slots"] = np.concatenate([np.asarray(p[2].slots, np.int64) for p in parts])
        split_chunks(decode_message(encode_message(Message("ann/chunks", f))))
        yield time.process_time() - t


def new_ann():
    for lo, hi, parts in anns:
        t = time.process_time()
        split_chunks(decode_message(encode_message(chunks_message(lo, hi, parts))))
        yield time.process_time() - t


def timed(f):
    t = time.process_time()
    f()
    return time.process_time() - t


res = {"tags old": [], "tags new": [], "ann old": [], "ann new": []}
for _ in range(5):
    res["tags old"].append(timed(old_tags))
    res["tags new"].append(timed(new_tags))
    res["ann old"].append(sum(old_ann()))
    res["ann new"].append(sum(new_ann()))
for k, v in res.items():
    print(f"{k}: {1e3 * min(v) / sim_s:.1f} ms CPU per simulated s (min of {len(v)}; all {[round(1e3 * x / sim_s, 1) for x in v]})")
