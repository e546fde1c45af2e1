"""Pre-shared secrets are loaded once (CLI review s32 H3): the fingerprint a load records, the
refusal of a second load in :func:`load_preshared_auth`, the rollback exception, and the export
files that never carry the fingerprint."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore
from labqfl.keystore.preshare import (
    FINGERPRINT_FIELD,
    FINGERPRINT_MIN_BITS,
    check_secret_unused,
    load_preshared_auth,
    secret_fingerprint,
)
from labqfl.keystore.transfer import export_keys, import_keys

PAIR = "C1-C2"


def _bits(seed: int, n: int = 512) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, n, dtype=np.uint8)


def _stores(data, *nodes: str) -> list[KeyStore]:
    return [KeyStore.for_node(n, data) for n in nodes]


def test_the_fingerprint_is_domain_separated_deterministic_and_absent_for_short_secrets():
    b = _bits(1)
    fp = secret_fingerprint(b)
    assert fp is not None and fp.startswith("sha256:") and fp == secret_fingerprint(b.copy())
    assert fp[7:] != hashlib.sha256(np.packbits(b).tobytes()).hexdigest()  # not a plain hash of the bytes
    assert secret_fingerprint(_bits(2)) != fp
    assert secret_fingerprint(b[:-8]) != fp  # the bit count is part of it
    assert secret_fingerprint(_bits(1, FINGERPRINT_MIN_BITS - 1)) is None


def test_load_preshared_auth_refuses_a_secret_either_store_already_holds(tmp_path):
    s1, s2 = _stores(tmp_path, "C1", "C2")
    with s1, s2:
        first = load_preshared_auth(s1, s2, PAIR, _bits(1), source="a.bin")
        [blk] = s1.blocks(PAIR)
        assert blk["meta"][FINGERPRINT_FIELD] == secret_fingerprint(_bits(1))
        before = (s1.accounting(), s2.accounting(), s1.blocks(), s2.blocks())
        with pytest.raises(KeyStoreError, match=f"already loaded as block {first['block_id']} of pair {PAIR} on "
                                                "node C1") as ei:
            load_preshared_auth(s1, s2, PAIR, _bits(1), source="b.bin")
        assert "\n" not in str(ei.value) and str(ei.value).startswith("secret file b.bin: ")
        assert (s1.accounting(), s2.accounting(), s1.blocks(), s2.blocks()) == before
        # spent or not, it stays refused: the fingerprint outlives the zeroed material
        s1.take(PAIR, 512, "auth")
        with pytest.raises(KeyStoreError, match="already loaded"):
            load_preshared_auth(s1, s2, PAIR, _bits(1))
        load_preshared_auth(s1, s2, PAIR, _bits(2))  # a fresh one loads


def test_check_secret_unused_scans_every_store_of_the_data_dir(tmp_path):
    s1, s2, s3, s4 = _stores(tmp_path, "C1", "C2", "C3", "C4")
    with s1, s2, s3, s4:
        out = load_preshared_auth(s3, s4, "C3-C4", _bits(1))
        with pytest.raises(KeyStoreError, match=f"block {out['block_id']} of pair C3-C4 on node C3"):
            check_secret_unused(tmp_path, _bits(1))
        check_secret_unused(tmp_path, _bits(2))  # nothing raised
        check_secret_unused(tmp_path / "none", _bits(1))  # no stores: nothing to check


def test_an_export_file_never_carries_the_fingerprint_and_the_source_still_refuses(tmp_path):
    s1, s2 = _stores(tmp_path / "d", "C1", "C2")
    other = KeyStore.for_node("C1", tmp_path / "e")
    with s1, s2, other:
        load_preshared_auth(s1, s2, PAIR, _bits(1))
        out = tmp_path / "x.exp"
        export_keys(s1, PAIR, out, ticket=other.issue_import_ticket(), nbits=500, purpose="auth")
        doc = json.loads(out.read_text())
        assert doc["segments"] and all(FINGERPRINT_FIELD not in s["meta"] for s in doc["segments"])
        assert all(s["meta"]["kind"] == "preshared-auth" for s in doc["segments"])
        assert secret_fingerprint(_bits(1))[7:] not in out.read_text()  # type: ignore[index]
        import_keys(other, out)
        assert all(FINGERPRINT_FIELD not in b["meta"] for b in other.blocks())
        with pytest.raises(KeyStoreError, match="already loaded"):
            check_secret_unused(tmp_path / "d", _bits(1))
