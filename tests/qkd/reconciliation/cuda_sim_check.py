"""Run under NUMBA_ENABLE_CUDASIM=1 by test_ldpc_cuda.py: the CUDA LDPC kernel in Numba's CUDA
simulator against the CPU kernels, bit for bit, both rules, cold and warm-started. Prints one JSON
line per case."""

from __future__ import annotations

import json

import numpy as np

from labqfl.qkd.ldpc import AMIN_ALPHA, AMIN_GAMMA_HIGH, build_code, minsum_weights
from labqfl.qkd.ldpc_cuda import qc_decode_frames_cuda
from labqfl.qkd.ldpc_qc import qc_aminstar_frames, qc_minsum_frames


def main() -> None:
    code = build_code(128, 0.5, 3, 8)
    rng = np.random.default_rng(0)
    nf, q = 4, 0.04
    x = rng.integers(0, 2, (nf, code.n), dtype=np.uint8)
    y = x ^ (rng.random((nf, code.n)) < q).astype(np.uint8)
    y[3] ^= (rng.random(code.n) < 0.2).astype(np.uint8)  # a frame far beyond the code: never converges
    synd = np.stack([code.syndrome(r) for r in x])
    L0 = np.where(y == 1, -1, 1).astype(np.float32) * np.float32(np.log((1 - q) / q))
    L0[:, rng.choice(code.n, 5, replace=False)] = 0.0  # punctured positions, as the blind protocol starts
    fr = np.array([3, 0, 1], np.int64)
    for rule, kern, w in (("minsum", qc_minsum_frames, minsum_weights(code)),
                          ("amin", qc_aminstar_frames, minsum_weights(code, AMIN_ALPHA, {}, AMIN_GAMMA_HIGH))):
        La, Ra = L0.copy(), np.zeros((nf, code.edges), np.float32)
        Lb, Rb = La.copy(), Ra.copy()
        for budget in (2, 6):  # the second call warm-starts from the first call's L and R
            ra = kern(code.base_ptr, code.base_col, code.base_shift, code.z, synd, La, Ra, fr, w, budget)
            rb = qc_decode_frames_cuda(rule, code.base_ptr, code.base_col, code.base_shift, code.z, synd, Lb, Rb,
                                       fr, w, budget)
            print(json.dumps({"rule": rule, "budget": budget, "cpu": ra.tolist(), "cuda": rb.tolist(),
                              "L_equal": bool(np.array_equal(La, Lb)), "R_equal": bool(np.array_equal(Ra, Rb)),
                              "R_nonzero": bool(np.any(Ra != 0))}))


def wipe() -> None:
    from numba import cuda

    from labqfl.qkd.ldpc_cuda import _wipe

    a = cuda.to_device(np.arange(3 * 300, dtype=np.float32).reshape(3, 300) + 1)
    _wipe[3, 256](a)
    print(json.dumps({"wiped": bool(not a.copy_to_host().any())}))


if __name__ == "__main__":
    main()
    wipe()
