"""CUDA only, informational: for the torch LDPC path (labqfl.qkd.ldpc_torch) on the default plan's
code at QBER 2 %, the host<->device copy of one call, the eager sweep time, and the same sweep
captured once as a CUDA graph and replayed (checked equal to the eager sweeps bit for bit).

    PYTHONPATH=. python3 docs/scripts/ldpc_torch_graph_replay.py 128
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

import labqfl.qkd.ldpc_torch as lt

sys.path.insert(0, "docs/scripts")
from ldpc_torch_timing import frames_for  # noqa: E402


def _copy_cost(L: np.ndarray, R: np.ndarray, synd: np.ndarray, dev: torch.device) -> tuple:
    fr = np.arange(L.shape[0])
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    Ld, Rd = torch.from_numpy(L[fr]).to(dev), torch.from_numpy(R[fr]).to(dev)
    Sd = torch.from_numpy(synd[fr].astype(np.int64)).to(dev)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    L2, R2 = L.copy(), R.copy()
    t2 = time.perf_counter()
    L2[fr], R2[fr] = Ld.cpu().numpy(), Rd.cpu().numpy()
    t3 = time.perf_counter()
    return Ld, Rd, Sd, t1 - t0, t3 - t2


def _eager(g, Ld, Rd, Sd, amin: bool, sweeps: int) -> tuple:
    La, Ra = Ld.clone(), Rd.clone()
    lt._sweep(g, La.clone(), Ra.clone(), Sd, amin)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(sweeps):
        lt._sweep(g, La, Ra, Sd, amin)
    torch.cuda.synchronize()
    return La, Ra, (time.perf_counter() - t0) / sweeps


def _graph(g, Ld, Rd, Sd, amin: bool, sweeps: int) -> tuple:
    Lg, Rg = Ld.clone(), Rd.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        lt._sweep(g, Ld.clone(), Rd.clone(), Sd, amin)  # warm-up on a side stream
    torch.cuda.current_stream().wait_stream(s)
    cg = torch.cuda.CUDAGraph()
    t0 = time.perf_counter()
    with torch.cuda.graph(cg):
        bad = lt._sweep(g, Lg, Rg, Sd, amin)
        ok = lt._syndrome_ok(g, Lg, Sd)
    torch.cuda.synchronize()
    tc = time.perf_counter() - t0
    Lg.copy_(Ld)
    Rg.copy_(Rd)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(sweeps):
        cg.replay()
        (bad == 0).logical_and(ok).cpu()  # the per-sweep host sync of the decoder
    torch.cuda.synchronize()
    return Lg, Rg, tc, (time.perf_counter() - t0) / sweeps


def main() -> None:
    dev = torch.device("cuda")
    F = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    for rule in ("minsum", "amin"):
        _pl, code, synd, L, w = frames_for(0.02, F, 1, rule)
        R = np.zeros((F, code.edges), np.float32)
        g = lt._graph(code.base_ptr, code.base_col, code.base_shift, code.z, code.n, w, dev)
        Ld, Rd, Sd, tin, tout = _copy_cost(L, R, synd, dev)
        MB = (L.nbytes + R.nbytes + synd.nbytes * 8) / 1e6
        print(f"{rule} F={F}: copy in {tin:.3f} s, out {tout:.3f} s ({MB:.0f} MB)", flush=True)
        La, Ra, te = _eager(g, Ld, Rd, Sd, rule == "amin", 5)
        Lg, Rg, tc, tg = _graph(g, Ld, Rd, Sd, rule == "amin", 5)
        same = torch.equal(Lg, La) and torch.equal(Rg, Ra)
        print(f"{rule} F={F}: eager {te * 1e3:.1f} ms/sweep, graph capture {tc:.2f} s, replay {tg * 1e3:.2f} "
              f"ms/sweep, graph == eager after 5 sweeps: {same}", flush=True)


if __name__ == "__main__":
    main()
