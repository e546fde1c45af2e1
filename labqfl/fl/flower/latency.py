"""Shorter waits for Flower's object transfers (a deployment's processes; timing only).

flwr 1.42 moves every message as a tree of objects: the sender pushes the message, then its
objects one by one; the receiver learns of the message first and pulls its objects
(``flwr.supercore.inflatable.inflatable_utils.pull_objects``). An object not there yet
(``ObjectUnavailableError``) is retried after an exponential backoff that **starts at 1 s**
(``PULL_INITIAL_BACKOFF``, cap 10 s). Both races happen in nearly every message of a labqfl round:
a SuperNode pulls a message from the SuperLink while the ServerApp is still pushing its objects,
and the SuperNode's SuperExec starts the ClientApp (which pulls the message from the SuperNode)
while the SuperNode is still pulling those objects. Measured on the 2-core development machine
(docs/nodes.md): 1.0-1.2 s lost by the SuperNode and 1-3 s by the ClientApp in most stages, for a
few milliseconds of transfer.

:func:`quick_object_pulls` makes the retries start at :data:`INITIAL_BACKOFF_S` and cap at
:data:`BACKOFF_CAP_S` in the calling process: the same requests over the same authenticated
connections, only sooner; the retry limits (500 tries, 2 h) stay Flower's. Called by the SuperNode
(:func:`labqfl.nodes.warmapp.supernode_main`), the ClientApp zygote (its forked ClientApps inherit
it) and the ServerApp (:mod:`labqfl.fl.flower.app`).
"""

from __future__ import annotations

from labqfl.log import get_logger

log = get_logger(__name__)

__all__ = ["BACKOFF_CAP_S", "INITIAL_BACKOFF_S", "quick_object_pulls", "warm_kernels"]

#: first wait before pulling an object again that was not there yet [s] (Flower: 1 s)
INITIAL_BACKOFF_S = 0.02
#: longest wait between two pulls of one object [s] (Flower: 10 s)
BACKOFF_CAP_S = 0.5


def quick_object_pulls(initial_s: float = INITIAL_BACKOFF_S, cap_s: float = BACKOFF_CAP_S) -> bool:
    """Set the default retry backoff of Flower's object pulls in this process; returns False (and
    logs a warning) when this Flower has no such defaults, which then stay as they are."""
    try:
        from flwr.supercore.inflatable import inflatable_utils as iu
    except ImportError:
        log.warning("Flower has no flwr.supercore.inflatable.inflatable_utils; object pulls keep their backoff")
        return False
    done = False
    for fn in (getattr(iu, "pull_objects", None), getattr(iu, "pull_and_inflate_object_from_tree", None)):
        kw = getattr(fn, "__kwdefaults__", None)
        if isinstance(kw, dict) and "initial_backoff" in kw and "backoff_cap" in kw:
            kw["initial_backoff"] = float(initial_s)
            kw["backoff_cap"] = float(cap_s)
            done = True
    if not done:
        log.warning("Flower's object pulls have no initial_backoff/backoff_cap defaults; they keep their backoff")
    return done


def warm_kernels() -> None:
    """Load the Numba kernels a ClientApp calls (the QNN statevector kernel and its Jacobian, the
    quantiser for every supported q) into this process, on a few numbers of no meaning, so that a
    process forked from it runs them at once: a fresh process spends ~0.7 s of CPU loading Numba's
    registries and the cached machine code at its first call (measured on the 2-core development
    machine, docs/nodes.md). For the ClientApp zygote (:mod:`labqfl.nodes.warmapp`); no data, key
    or generator state of any run is involved. Numba's parallel kernel is never called here, so
    no thread pool is started."""
    import numpy as np

    from labqfl.fl.models._statevector import hea_expval_jacobian
    from labqfl.fl.models.hea import HEASpec
    from labqfl.fl.quantize import SUPPORTED_Q, quantize

    spec = HEASpec(n_qubits=2, n_layers=1)
    states = np.zeros((1, 1, spec.dim), dtype=np.complex128)
    states[0, 0, 0] = 1.0
    hea_expval_jacobian(np.zeros((1, *spec.weight_shape)), states, spec, want_jac=True)  # one example: serial kernel
    x = np.zeros(4)
    for q in SUPPORTED_Q:
        quantize(x, clip=1.0, levels=3, q=q, rounding="stochastic", rng=np.random.default_rng(0))
        quantize(x.astype(np.float32), clip=1.0, levels=3, q=q)
