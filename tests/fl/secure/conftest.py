"""Fixtures for the secure-aggregation tests: real per-node SQLite key stores
(``labqfl.keystore``), wrapped so the test can check every bit handed out against the stores'
own accounting."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labqfl.keystore import KeyStore


class RecordingStore:
    """A real :class:`KeyStore` that also records the refs of every take / take_exact."""

    def __init__(self, store: KeyStore, node: str, log: list[tuple[str, str, str, int, int]]) -> None:
        self.store = store
        self.node = node
        self.log = log

    def available_bits(self, pair: str, purpose: str | None = None) -> int:
        return self.store.available_bits(pair, purpose)

    def _note(self, pair: str, refs: list[Any]) -> None:
        for block_id, start, length in refs:
            self.log.append((self.node, pair, str(block_id), int(start), int(length)))

    def take(self, pair: str, nbits: int, purpose: str, **kw: Any) -> Any:
        km = self.store.take(pair, nbits, purpose, **kw)
        self._note(pair, km.refs)
        return km

    def take_exact(self, pair: str, refs: Any, purpose: str, **kw: Any) -> Any:
        km = self.store.take_exact(pair, refs, purpose, **kw)
        self._note(pair, km.refs)
        return km

    # reservations hand out no bits (take_exact of the key ID does): passed through unrecorded
    def reserve(self, *a: Any, **kw: Any) -> Any:
        return self.store.reserve(*a, **kw)

    def reserve_exact(self, *a: Any, **kw: Any) -> Any:
        return self.store.reserve_exact(*a, **kw)

    def release(self, key_id: str) -> int:
        return self.store.release(key_id)

    def void(self, key_id: str, reason: str) -> Any:
        return self.store.void(key_id, reason)

    def pending_reservations(self, purpose: str | None = None) -> Any:
        return self.store.pending_reservations(purpose)

    @property
    def path(self) -> Path:
        return self.store.path


class KeyNetwork:
    """Per-node key stores in a temporary data dir; pair blocks added identically at both ends."""

    def __init__(self, data_dir: Path, seed: int = 0) -> None:
        self.data_dir = data_dir
        self.rng = np.random.default_rng(seed)
        self.raw: dict[str, KeyStore] = {}
        self.log: list[tuple[str, str, str, int, int]] = []

    def store(self, node: str) -> KeyStore:
        if node not in self.raw:
            self.raw[node] = KeyStore.for_node(node, self.data_dir)
        return self.raw[node]

    def stores(self, nodes: list[str]) -> dict[str, RecordingStore]:
        return {n: RecordingStore(self.store(n), n, self.log) for n in nodes}

    def add_key(self, pair: str, nbits: int, purpose: str = "fl") -> np.ndarray:
        bits = self.rng.integers(0, 2, nbits, dtype=np.uint8)
        block_id = str(uuid.uuid4())
        for node in pair.split("-"):
            self.store(node).add_block(pair, bits, block_id=block_id, purpose=purpose)
        return bits

    def consumed_bits(self, node: str, pair: str) -> int:
        acc = self.store(node).accounting().get(pair, {})
        return int(sum(acc.get("consumed", {}).values()))

    def assert_no_bit_used_twice(self) -> int:
        """Per node: recorded ranges are disjoint and equal the store's consumed count."""
        total = 0
        per: dict[tuple[str, str], list[tuple[int, int]]] = {}
        pairs: dict[str, set[str]] = {}
        for node, pair, block, start, length in self.log:
            per.setdefault((node, block), []).append((start, start + length))
            pairs.setdefault(node, set()).add(pair)
        for (node, block), ranges in per.items():
            ranges.sort()
            for (_a0, a1), (b0, _b1) in zip(ranges, ranges[1:], strict=False):
                assert b0 >= a1, f"{node}: a key bit of block {block} was handed out twice"
            total += sum(b - a for a, b in ranges)
        store_total = sum(self.consumed_bits(n, p) for n, ps in pairs.items() for p in ps)
        assert store_total == total, f"store accounting {store_total} != bits handed out {total}"
        return total

    def close(self) -> None:
        for s in self.raw.values():
            s.close()


@pytest.fixture
def key_network(tmp_path: Path):  # type: ignore[no-untyped-def]
    net = KeyNetwork(tmp_path / "keys", seed=1234)
    yield net
    net.close()
