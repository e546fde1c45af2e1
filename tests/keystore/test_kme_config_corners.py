"""KME config corners (review s36 input F9) and the ETSI echo of a null key_ID (F11): ``max_key_per_request =
10**12`` was accepted and lifted the 413 request-body cap (16 KiB + 1 KiB per key ID) to ~1 PB; ``nodes = "C1"``
and duplicate nodes were reported as an SAE "not one of nodes"; ``kme_id_prefix = 5`` was accepted. Each is now
one ConfigError naming the key and what is expected. A dec_keys ``{"key_ID": null}`` was echoed as "None"."""

from __future__ import annotations

from pathlib import Path

import pytest

from labqfl.errors import ConfigError
from labqfl.keystore.etsi import MAX_KEY_PER_REQUEST_LIMIT, load_kme_settings, max_body_bytes


def _load(tmp_path: Path, kme: str) -> object:
    f = tmp_path / "kme.toml"
    f.write_text(f"[kme]\n{kme}\n[saes]\nC1 = \"C1\"\nC2 = \"C2\"\n", encoding="utf-8")
    return load_kme_settings(f)


@pytest.mark.parametrize(("line", "expect"), [
    ("max_key_per_request = 1000000000000",
     f"max_key_per_request = 1000000000000; expected an integer from 1 to {MAX_KEY_PER_REQUEST_LIMIT}"),
    ("max_key_per_request = 0", "max_key_per_request = 0; expected an integer from 1"),
    ("max_key_per_request = 12.5", "max_key_per_request = 12.5; expected an integer"),
    ("max_key_count = 1e300", "max_key_count = 1e+300; expected an integer"),
    ('nodes = "C1"', "nodes = 'C1'; expected a list of distinct node names"),
    ('nodes = ["C1", "C1", "C2"]', "nodes = ['C1', 'C1', 'C2']; expected a list of distinct node names"),
    ("kme_id_prefix = 5", "kme_id_prefix = 5; expected a string"),
])
def test_each_bad_kme_setting_is_named(tmp_path: Path, line: str, expect: str) -> None:
    with pytest.raises(ConfigError) as ei:
        _load(tmp_path, line)
    assert f"KME config: {expect}" in str(ei.value), str(ei.value)


def test_the_largest_allowed_setting_keeps_the_413_cap_small(tmp_path: Path) -> None:
    s = _load(tmp_path, f"max_key_per_request = {MAX_KEY_PER_REQUEST_LIMIT}\nnodes = [\"C1\", \"C2\"]")
    assert max_body_bytes(s) <= 2 * 1024 * 1024  # type: ignore[arg-type]


def test_a_null_key_id_is_echoed_as_null(kme, kh):  # type: ignore[no-untyped-def]
    import httpx

    with httpx.Client(base_url=kme.url, verify=kh.client_context(kme.certs, "C1"), timeout=30) as c:
        r = c.post("/api/v1/keys/C2/dec_keys", json={"key_IDs": [{"key_ID": None}]})
        assert r.status_code == 400
        assert r.json() == {"message": "key_ID is null; expected a UUID string", "details": [{"key_ID": None}]}
        r = c.post("/api/v1/keys/C2/dec_keys", json={"key_IDs": [{"key_ID": [1, 2]}]})
        assert r.status_code == 400 and r.json()["details"] == [{"key_ID": "(an array)"}]
