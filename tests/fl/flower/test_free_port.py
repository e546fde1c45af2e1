"""``free_port`` draws below the kernel's ephemeral range: a port picked with ``bind(0)`` is an ephemeral one,
which any process's outgoing connection may take before the server binds it (a SuperNode of
test_deployment failed with "address already in use" in a loaded clean-clone CI run)."""

from __future__ import annotations

import random
import socket

import pytest

from labqfl.fl.flower import deploy


def test_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    for _ in range(20):
        port = deploy.free_port()
        assert deploy._PORT_RANGE[0] <= port <= deploy._PORT_RANGE[1] < 32768
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free: this bind succeeds


def test_free_port_skips_a_port_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        free = next(p for p in range(*deploy._PORT_RANGE) if _bindable(p))
        draws = iter([taken, free])
        monkeypatch.setattr(random, "randint", lambda a, b: next(draws))
        assert deploy.free_port() == free


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
