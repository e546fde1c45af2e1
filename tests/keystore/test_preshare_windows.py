"""A pre-shared secret that shares a part with one loaded before is refused (review s32, second look,
F3: one byte appended gave a new whole-secret fingerprint and the same one-time key loaded twice):
the window fingerprints a load records (labqfl.keystore.preshare.secret_windows) and the every-bit-
offset comparison of a new secret. Independent secrets still load; a store written before the windows
existed still refuses an exact copy of its secrets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore
from labqfl.keystore.preshare import (
    FINGERPRINT_FIELD,
    WINDOWS_FIELD,
    check_secret_unused,
    find_earlier_load,
    load_preshared_auth,
    secret_fingerprint,
    secret_windows,
)
from labqfl.keystore.transfer import export_keys

PAIR = "C1-C2"


def _secret(seed: int, nbytes: int = 48) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def _bits(b: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(b, np.uint8))


def _stores(data, *nodes: str) -> list[KeyStore]:
    return [KeyStore.for_node(n, data) for n in nodes]


S = _secret(1, 96)  # the first secret; the variants below all share at least 48 bytes with it
VARIANTS = {
    "one byte appended": S + b"\x07",
    "one byte prepended": b"\x07" + S,
    "prefix": S[:48],
    "suffix": S[-48:],
    "shifted by one byte": S[1:] + b"\x00",
    "a 48-byte middle part": S[24:72],
    "inside a longer secret": _secret(2, 40) + S + _secret(3, 40),
    "prefix behind fresh bytes": _secret(4, 16) + S[:48],
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_secret_sharing_a_part_with_an_earlier_load_is_refused_and_nothing_is_stored(tmp_path, name):
    s1, s2 = _stores(tmp_path, "C1", "C2")
    with s1, s2:
        first = load_preshared_auth(s1, s2, PAIR, _bits(S), source="a.bin")
        before = (s1.accounting(), s2.accounting(), s1.blocks(), s2.blocks())
        with pytest.raises(KeyStoreError, match=f"already loaded as block {first['block_id']} of pair {PAIR} "
                                                "on node C1 .*whole or in part"):
            load_preshared_auth(s1, s2, PAIR, _bits(VARIANTS[name]), source="b.bin")
        assert (s1.accounting(), s2.accounting(), s1.blocks(), s2.blocks()) == before
        with pytest.raises(KeyStoreError, match="already loaded"):  # the data dir scan of `keys preshare` too
            check_secret_unused(tmp_path, _bits(VARIANTS[name]))


@pytest.mark.parametrize("shift", [1, 3, 7, 9])
def test_a_secret_shifted_by_any_number_of_bits_is_refused(tmp_path, shift):
    s1, s2 = _stores(tmp_path, "C1", "C2")
    with s1, s2:
        load_preshared_auth(s1, s2, PAIR, _bits(S))
        moved = np.concatenate([np.ones(shift, np.uint8), _bits(S), np.zeros(8 - shift % 8, np.uint8)])
        with pytest.raises(KeyStoreError, match="already loaded"):
            load_preshared_auth(s1, s2, PAIR, moved)


def test_independent_secrets_load_and_each_records_its_windows(tmp_path):
    s1, s2 = _stores(tmp_path, "C1", "C2")
    with s1, s2:
        for seed, n in [(10, 48), (11, 48), (12, 96), (13, 8192)]:
            load_preshared_auth(s1, s2, PAIR, _bits(_secret(seed, n)))
        metas = [b["meta"] for b in s1.blocks(PAIR)]
        assert [len(m[WINDOWS_FIELD]) // 16 for m in metas] == [2, 2, 5, 511]  # every 16 bytes, and the last
        assert all(m[FINGERPRINT_FIELD].startswith("sha256:") for m in metas)
        check_secret_unused(tmp_path, _bits(_secret(14, 4096)))  # a fifth fresh one: nothing raised


def test_the_window_fingerprints_do_not_show_the_secret_and_are_not_exported(tmp_path):
    w = secret_windows(_bits(S))
    assert w is not None and len(w) == 16 * 5 and S.hex() not in w
    assert all(S[i:i + 8].hex() not in w for i in range(len(S) - 8))
    assert secret_windows(_bits(S)[:255]) is None
    s1, s2, other = *_stores(tmp_path / "d", "C1", "C2"), KeyStore.for_node("C1", tmp_path / "e")
    with s1, s2, other:
        load_preshared_auth(s1, s2, PAIR, _bits(S))
        out = tmp_path / "x.exp"
        export_keys(s1, PAIR, out, ticket=other.issue_import_ticket(), nbits=300, purpose="auth")
        text = out.read_text()
        # review s38 F6: only the window lying wholly inside the 300 exported bits (bytes 0-31) travels, so that
        # the importing store refuses the secret again; no window over bits that stay, no whole-secret fingerprint
        assert [s["meta"][WINDOWS_FIELD] for s in json.loads(text)["segments"]] == [w[:16]]
        assert all(w[i:i + 16] not in text for i in range(16, len(w), 16)) and FINGERPRINT_FIELD not in text


def test_a_store_written_before_the_windows_still_refuses_an_exact_copy(tmp_path):
    """An old load recorded only the whole-secret fingerprint: its exact copy is still refused, a
    fresh secret still loads, and the new load records both kinds."""
    from labqfl.qkd.pipeline import PRESHARED_PREFIX

    s1, s2 = _stores(tmp_path, "C1", "C2")
    with s1, s2:
        old = {"kind": "preshared-auth", "simulated": False, "nbits": 8 * len(S),
               FINGERPRINT_FIELD: secret_fingerprint(_bits(S))}
        for st in (s1, s2):
            st.add_block(PAIR, _bits(S), block_id=f"{PRESHARED_PREFIX}old", purpose="auth", meta=old)
        assert find_earlier_load([s1], _bits(S)) is not None
        assert find_earlier_load([s1], secret_fingerprint(_bits(S))) is not None  # the old call still works
        with pytest.raises(KeyStoreError, match=f"block {PRESHARED_PREFIX}old of pair {PAIR}"):
            load_preshared_auth(s1, s2, PAIR, _bits(S))
        load_preshared_auth(s1, s2, PAIR, _bits(_secret(5, 64)))
        new = [b["meta"] for b in s1.blocks(PAIR) if b["block_id"] != f"{PRESHARED_PREFIX}old"]
        assert len(new) == 1 and FINGERPRINT_FIELD in new[0] and WINDOWS_FIELD in new[0]
