"""Benchmark ``keystore``: ETSI GS QKD 014 ``enc_keys`` over HTTPS with mutual TLS on loopback
(one keep-alive client, sequential requests, interleaved with the baseline), against the same KME calls made in-process
(:meth:`KeyDeliveryService.enc_keys`, no HTTP, no TLS) on an identical store, side by side."""

from __future__ import annotations

import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from labqfl.bench import BenchResult, benchmark

_PAIR = "C1-C2"
_SIZE = 256  # bits per key (the ETSI default key_size)
_BATCH = 32  # keys per request in the batched run (details only)


def _fill(data: Path, nbits: int) -> dict[str, Any]:
    from labqfl.keystore import open_node_stores

    stores = open_node_stores(["C1", "C2"], data)
    rng = np.random.default_rng(0)
    block = 1 << 16
    for _ in range(-(-nbits // block)):
        bits = rng.integers(0, 2, block, dtype=np.uint8)
        bid = stores["C1"].add_block(_PAIR, bits, purpose="etsi")
        stores["C2"].add_block(_PAIR, bits, block_id=bid, purpose="etsi")
    return stores


def _stats(lat_s: list[float], wall_s: float) -> dict[str, float]:
    a = np.asarray(lat_s) * 1e3
    return {"keys_per_s": len(lat_s) / wall_s, "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


@benchmark("keystore", "ETSI 014 enc_keys (1 key of 256 bits per request) over HTTPS mutual TLS on loopback, "
           "vs the same KME call in-process", target="≥ 100 keys/s over mTLS, p99 ≤ 50 ms")
def _keystore(quick: bool) -> BenchResult:
    import httpx

    from labqfl.keystore.certs import make_dev_certs
    from labqfl.keystore.etsi import KeyDeliveryService, KmeServerThread, KmeSettings

    n = 30 if quick else 400
    nb = 4 if quick else 20  # batched requests of _BATCH keys (one store transaction each)
    settings = KmeSettings(saes={"C1": "C1", "C2": "C2"}, nodes=["C1", "C2"])
    with tempfile.TemporaryDirectory(prefix="labqfl-bench-keystore-") as tmp:
        root = Path(tmp)
        make_dev_certs(root / "certs", saes=["C1", "C2"])
        c = root / "certs"
        # Baseline: the in-process service on its own identical store.  Figure: the same calls
        # through uvicorn + TLS 1.3 with client certificates.  Calls alternate (baseline, HTTPS,
        # baseline, ...) so both see the same disk and CPU load (fsync dominates the store side).
        base_svc = KeyDeliveryService(_fill(root / "base", n * _SIZE), settings)
        svc = KeyDeliveryService(_fill(root / "https", (n + nb * _BATCH) * _SIZE), settings)
        ctx = ssl.create_default_context(cafile=str(c / "ca.pem"))
        ctx.load_cert_chain(str(c / "sae-C1.pem"), str(c / "sae-C1.key"))
        with KmeServerThread(svc, certfile=c / "kme-kme.pem", keyfile=c / "kme-kme.key", cafile=c / "ca.pem") as srv, \
                httpx.Client(base_url=srv.base_url, verify=ctx, timeout=30) as client:
            client.get("/api/v1/keys/C2/status").raise_for_status()  # handshake outside the timing
            lat: list[float] = []
            lat_b: list[float] = []
            for _ in range(n):
                t = time.perf_counter()
                base_svc.enc_keys("C1", "C2", 1, _SIZE)
                lat_b.append(time.perf_counter() - t)
                t = time.perf_counter()
                r = client.post("/api/v1/keys/C2/enc_keys", json={"number": 1, "size": _SIZE})
                lat.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(f"enc_keys failed during the benchmark: {r.status_code} {r.text[:200]}")
            fig = _stats(lat, sum(lat))
            base = _stats(lat_b, sum(lat_b))
            t0 = time.perf_counter()
            for _ in range(nb):
                r = client.post("/api/v1/keys/C2/enc_keys", json={"number": _BATCH, "size": _SIZE})
                r.raise_for_status()
            batched = nb * _BATCH / (time.perf_counter() - t0)
    return BenchResult(
        figure=fig["keys_per_s"], unit="keys/s", baseline="in-process KeyDeliveryService.enc_keys (no HTTP/TLS)",
        baseline_figure=base["keys_per_s"], higher_is_better=True,
        target="≥ 100 keys/s over mTLS, p99 ≤ 50 ms",
        passed=bool(fig["keys_per_s"] >= 100 and fig["p99_ms"] <= 50),
        details={"requests": n, "key_bits": _SIZE, "https_mtls": fig, "in_process": base,
                 "https_kbit_per_s": fig["keys_per_s"] * _SIZE / 1e3,
                 f"https_keys_per_s_batched_{_BATCH}_per_request": batched})
