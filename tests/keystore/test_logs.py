"""No key material reaches any log: every record emitted at DEBUG (labqfl, uvicorn, httpx, …)
during store and KME operations is searched for the delivered keys in every encoding."""

from __future__ import annotations

import base64
import logging

import httpx
import numpy as np

from labqfl.keystore import open_node_stores
from labqfl.keystore.transfer import export_keys, import_keys

PAIR = "C1-C2"


def _encodings(raw: bytes, bits: np.ndarray) -> list[str]:
    return [base64.b64encode(raw).decode()[:16], raw.hex()[:16], raw.hex().upper()[:16], repr(raw)[2:14],
            "".join(map(str, bits[:48].tolist())), str(bits[:12].tolist())[1:-1], str(bits[:12])[1:-1]]


def test_no_key_material_in_logs(caplog, tmp_path, kme, kh):
    caplog.set_level(logging.DEBUG)  # root: captures labqfl.* and every third-party logger
    caplog.set_level(logging.DEBUG, logger="labqfl")  # in case a CLI test set labqfl's level
    caplog.set_level(logging.DEBUG, logger="uvicorn")
    secrets: list[str] = []
    stores = open_node_stores(["C1", "C2"], tmp_path)
    kh.fill_pair(stores, PAIR, 2, 4096, seed=9)
    k = stores["C1"].take(PAIR, 1024, "fl")
    k2 = stores["C2"].take_exact(PAIR, k.refs, "fl")
    assert np.array_equal(k.bits, k2.bits)
    secrets += _encodings(k.to_bytes(), k.bits)
    logging.getLogger("labqfl.test").debug("took %s", k)  # the repr of key material is safe to log
    out = tmp_path / "x.json"
    other = open_node_stores(["C2"], tmp_path / "other")["C2"]
    export_keys(stores["C2"], PAIR, out, ticket=other.issue_import_ticket(), nbits=512)
    import_keys(other, out)
    with httpx.Client(base_url=kme.url, verify=kh.client_context(kme.certs, "C1")) as m, \
            httpx.Client(base_url=kme.url, verify=kh.client_context(kme.certs, "C2")) as s:
        keys = m.post("/api/v1/keys/C2/enc_keys", json={"number": 2, "size": 256}).json()["keys"]
        s.post("/api/v1/keys/C1/dec_keys", json={"key_IDs": [{"key_ID": x["key_ID"]} for x in keys]})
        s.get("/api/v1/keys/C1/dec_keys", params={"key_ID": keys[0]["key_ID"]})  # 400: already retrieved
    for x in keys:
        raw = base64.b64decode(x["key"])
        secrets += _encodings(raw, np.unpackbits(np.frombuffer(raw, np.uint8)))
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert any(r.name.startswith("labqfl.keystore") for r in caplog.records)
    assert keys[0]["key_ID"] in text  # key IDs are logged, material is not
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"key material found in logs: {leaked[:3]}"
