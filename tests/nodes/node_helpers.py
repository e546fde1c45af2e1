"""Shared set-ups of the tests in tests/nodes (not a test module)."""

from __future__ import annotations

import importlib.util
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labqfl.sim_backends.qrng import new_client_log

from labqfl.net import make_node_certs
from labqfl.nodes.client import ClientNode, _Acq, _IPair, _JPair


def sibling(name: str, here: str) -> Any:
    """The test module ``name`` of the folder of ``here`` (a test's ``__file__``), loaded by path: the suite
    runs with --import-mode=importlib, so one test module cannot import another by name."""
    spec = importlib.util.spec_from_file_location(f"_{name}", Path(here).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def armed_client(tmp_path: Path, name: str, acq: str, *, certs_for: Sequence[str] = ("ctl",),
                 serve: bool = False) -> types.SimpleNamespace:
    """A real client node ``name`` armed for acquisition ``acq`` with 10 000 slots, as ``ctl/arm`` with a
    duration leaves it: a pair end per pair, its pair threads as Ci started and waiting for announcements.
    Certificates for ``name`` and ``certs_for`` in ``tmp_path/certs``; ``serve``: its server started. Returns
    (node, a, certs); :func:`disarm` ends it."""
    certs = tmp_path / "certs"
    make_node_certs(certs, [name, *certs_for])
    node = ClientNode(name, station=None, data_dir=tmp_path / "data", listen="127.0.0.1:0", certs=certs)
    if serve:
        node.server.start()
    a = _Acq(acq, new_client_log(node.cfg.client(name), 1 << 20), {})
    a.n_slots, a.rep_rate_hz = 10_000, float(node.cfg.laser.rep_rate_hz)
    for p, ci in node.j_of.items():
        a.j_pairs[p] = _JPair(node, a, p, ci)
    for p, cj in node.i_of.items():
        a.i_pairs[p] = _IPair(node, a, p, cj)
    node.acqs[acq] = a
    for ip in a.i_pairs.values():
        ip.thread.start()
    return types.SimpleNamespace(node=node, a=a, certs=certs)


def disarm(c: types.SimpleNamespace, *, served: bool = False) -> None:
    """Stop :func:`armed_client`'s pair threads (and its server when ``served``) and close its store."""
    for ip in c.a.i_pairs.values():
        ip.inbox.put(-1)
    if served:
        c.node.server.stop(0)
    c.node.store.close()
