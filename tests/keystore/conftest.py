"""Shared fixtures for the key store tests: filled pairs of node stores, development
certificates and a running KME with mutual TLS on 127.0.0.1."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from labqfl.keystore import KeyStore, open_node_stores
from labqfl.keystore.certs import make_dev_certs
from labqfl.keystore.etsi import KeyDeliveryService, KmeServerThread, KmeSettings

PAIR = "C1-C2"


def fill_pair(stores: dict[str, KeyStore], pair: str, nblocks: int, nbits: int, seed: int,
              purpose: str = "general") -> dict[str, np.ndarray]:
    """Add the same random blocks to both nodes of ``pair``; returns {block_id: bits}."""
    a, b = pair.split("-")
    rng = np.random.default_rng(seed)
    out = {}
    for _ in range(nblocks):
        bits = rng.integers(0, 2, nbits, dtype=np.uint8)
        bid = stores[a].add_block(pair, bits, purpose=purpose, run_id="test", meta={"eps_sec": 1e-10})
        stores[b].add_block(pair, bits, block_id=bid, purpose=purpose, run_id="test", meta={"eps_sec": 1e-10})
        out[bid] = bits
    return out


def expected_bits(blocks: dict[str, np.ndarray], refs: list[tuple[str, int, int]]) -> np.ndarray:
    return np.concatenate([blocks[b][o:o + n] for b, o, n in refs])


@pytest.fixture(scope="session")
def store_pair_block():  # type: ignore[no-untyped-def]
    """``store_pair_block(data_dir, bits, meta, purpose="general")`` → the block ID: the same block in C1's and
    C2's stores (pair C1-C2) under one ID, as a distillation leaves it."""

    def store(data_dir: Path, bits: np.ndarray, meta: dict, purpose: str = "general") -> str:
        with KeyStore.for_node("C1", data_dir) as a, KeyStore.for_node("C2", data_dir) as b:
            bid = a.add_block(PAIR, bits, purpose=purpose, meta=meta)
            b.add_block(PAIR, bits, block_id=bid, purpose=purpose, meta=meta)
        return bid

    return store


@pytest.fixture(scope="session")
def kme_status():  # type: ignore[no-untyped-def]
    """``kme_status(data_dir)`` → the ETSI GS QKD 014 status SAE C1 gets for C2 from the nodes' stores in
    ``data_dir`` (opened for the call and closed again)."""

    def status(data_dir: Path) -> dict:
        stores = open_node_stores(["C1", "C2"], data_dir)
        try:
            return KeyDeliveryService(stores, KmeSettings(saes={"C1": "C1", "C2": "C2"})).status("C1", "C2")
        finally:
            for s in stores.values():
                s.close()

    return status


@pytest.fixture
def two_stores(tmp_path: Path) -> Iterator[tuple[dict[str, KeyStore], dict[str, np.ndarray]]]:
    stores = open_node_stores(["C1", "C2"], tmp_path)
    blocks = fill_pair(stores, PAIR, 3, 2000, seed=1)
    yield stores, blocks
    for s in stores.values():
        s.close()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    make_dev_certs(d, saes=["C1", "C2", "C3", "stranger"])
    make_dev_certs(d / "other-ca", saes=["C1"], kmes=[])
    return d


def client_context(certs: Path, sae: str | None, ca_dir: Path | None = None) -> ssl.SSLContext:
    """TLS client context trusting the development CA, presenting ``sae``'s certificate."""
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if sae is not None:
        d = ca_dir or certs
        ctx.load_cert_chain(str(d / f"sae-{sae}.pem"), str(d / f"sae-{sae}.key"))
    return ctx


class Kme:
    def __init__(self, server: KmeServerThread, stores: dict[str, KeyStore], blocks: dict[str, np.ndarray],
                 certs: Path):
        self.server, self.stores, self.blocks, self.certs = server, stores, blocks, certs

    @property
    def url(self) -> str:
        return self.server.base_url


@pytest.fixture(scope="module")
def kme(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[Kme]:
    data = tmp_path_factory.mktemp("kme-data")
    stores = open_node_stores(["C1", "C2", "C3"], data)
    blocks = fill_pair(stores, PAIR, 4, 1 << 16, seed=7, purpose="etsi")
    settings = KmeSettings(saes={"C1": "C1", "C2": "C2", "C3": "C3"}, nodes=["C1", "C2", "C3"])
    server = KmeServerThread(KeyDeliveryService(stores, settings), certfile=certs / "kme-kme.pem",
                             keyfile=certs / "kme-kme.key", cafile=certs / "ca.pem")
    with server:
        yield Kme(server, stores, blocks, certs)
    for s in stores.values():
        s.close()


class _Helpers:
    PAIR = PAIR
    fill_pair = staticmethod(fill_pair)
    expected_bits = staticmethod(expected_bits)
    client_context = staticmethod(client_context)

    @staticmethod
    def positions(refs: list[tuple[str, int, int]]) -> list[tuple[str, int]]:
        return [(b, i) for b, o, n in refs for i in range(o, o + n)]


@pytest.fixture(scope="session")
def kh() -> type[_Helpers]:
    """Helpers shared by the key store tests (conftest cannot be imported under importlib mode)."""
    return _Helpers
