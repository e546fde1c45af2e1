"""Benchmark ``node-transport``: Cascade between two nodes over the node transport (gRPC, mutual TLS
on loopback, Wegman–Carter tags on every message) against the same Cascade with both parties in
process (``LocalChannel``, same tags), side by side on the same frames."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from labqfl.bench import BenchResult, benchmark
from labqfl.bench import noisy_frame as _frame


@benchmark("node-transport", "Cascade (10^6 bits, QBER 2 %) between two nodes over gRPC + mutual TLS on loopback "
           "with Wegman–Carter tags, vs both parties in process with the same tags",
           target="report the cost of the wire (ratio and ms per round trip)")
def _node_transport(quick: bool) -> BenchResult:
    from labqfl.net import NodeChannel, NodeCredentials, NodeServer, ServedSession, make_node_certs
    from labqfl.qkd.authentication import BitPool, WegmanCarterAuthenticator
    from labqfl.qkd.cascade import CascadeAlice, CascadeBob, reconcile_cascade
    from labqfl.qkd.messaging import LocalChannel

    q = 0.02
    n = 50_000 if quick else 1_000_000
    x, y = _frame(n, q, 3)
    reconcile_cascade(x[:2000], y[:2000], q, seed=0)  # compile the kernels outside the timing
    auth_bits = np.random.default_rng(4).integers(0, 2, 1 << 22, dtype=np.uint8)  # test key, not secret

    def wc() -> WegmanCarterAuthenticator:
        return WegmanCarterAuthenticator(BitPool(auth_bits.copy()))

    with tempfile.TemporaryDirectory(prefix="labqfl-bench-net-") as tmp:
        make_node_certs(Path(tmp), ["C1", "C2"])
        srv = NodeServer(NodeCredentials.load(Path(tmp), "C1")).start()
        srv.route("cascade", lambda peer, hello: ServedSession(CascadeAlice(x), wc()), allowed_peers={"C2"})
        c2 = NodeCredentials.load(Path(tmp), "C2")
        walls: dict[str, float] = {"local": float("inf"), "net": float("inf")}
        rts = 0
        try:
            for _ in range(1 if quick else 3):  # interleaved so both see the same load
                t0 = time.perf_counter()
                res_l = CascadeBob(y, q, seed=7).run(LocalChannel(CascadeAlice(x), wc(), wc()))
                walls["local"] = min(walls["local"], time.perf_counter() - t0)
                t0 = time.perf_counter()
                with NodeChannel(srv.address, c2, "C1", "cascade", authenticator=wc()) as ch:
                    res_n = CascadeBob(y, q, seed=7).run(ch)
                walls["net"] = min(walls["net"], time.perf_counter() - t0)
                rts = ch.stats.round_trips
        finally:
            srv.stop()
    same = bool(np.array_equal(res_l.corrected, res_n.corrected)) and res_l.leaked_bits == res_n.leaked_bits
    net_mbps, local_mbps = n / walls["net"] / 1e6, n / walls["local"] / 1e6
    return BenchResult(
        figure=net_mbps, unit="Mbit/s", baseline="the same Cascade and tags with both parties in process",
        baseline_figure=local_mbps, passed=same if not quick else None,
        details={"frame_bits": n, "qber": q, "round_trips": rts,
                 "wire_ms_per_round_trip": round((walls["net"] - walls["local"]) / max(rts, 1) * 1e3, 3),
                 "identical_result": same, "residual_errors": int((res_n.corrected != x).sum())})
