"""Fixtures of the GUI tests: offscreen Qt, a small fast simulated station, a core per test."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from labqfl.gui.core import Event, TestbedCore  # noqa: E402
from labqfl.sim_backends.stations import edit_station  # noqa: E402

from labqfl.config import StationConfig  # noqa: E402


@pytest.fixture(scope="session")
def small_config() -> StationConfig:
    """Two clients (one pair) and 2 ms tag blocks: fast to open, to stream and to stop."""
    def edit(d: dict[str, Any]) -> None:
        d["simulation"]["block_duration_s"] = 0.002
        d["name"] = "gui-test-2client"

    return edit_station(edit, n_clients=2)


@pytest.fixture(scope="session", autouse=True)
def _warm_kernels(small_config: StationConfig) -> None:
    """What a connect loads first (:mod:`labqfl.gui.workers.warmup`), once per test process and without
    a deadline: on a clean clone's empty Numba cache it compiles for about a minute, which the tests'
    60 s connect and 30 s first-rates deadlines are not meant to measure."""
    from labqfl.gui.workers.warmup import warm_up

    warm_up(small_config)


@pytest.fixture
def core(small_config: StationConfig, tmp_path) -> Any:  # type: ignore[no-untyped-def]
    c = TestbedCore(small_config, data_dir=tmp_path / "data", runs_dir=tmp_path / "runs")
    yield c
    c.shutdown(20.0)


class EventLog:
    """Collects a core's events while waiting for conditions (no Qt needed)."""

    def __init__(self, core: TestbedCore) -> None:
        self.core = core
        self.events: list[Event] = []

    def pump(self) -> None:
        self.events.extend(self.core.drain())

    def kinds(self, kind: str) -> list[Any]:
        self.pump()
        return [e.data for e in self.events if e.kind == kind]

    def wait(self, pred: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            if pred():
                return
            time.sleep(0.02)
        raise AssertionError(f"condition not met within {timeout} s; events: {sorted({e.kind for e in self.events})}")


@pytest.fixture
def make_win(qtbot, tmp_path):  # type: ignore[no-untyped-def]
    """``make_win(cfg=None)`` → a main window on a new controller of ``cfg`` (default: the default simulated
    station) with its key stores and run folders in ``tmp_path``; every controller is shut down afterwards."""
    from labqfl.gui.controller import Controller
    from labqfl.gui.main_window import MainWindow

    from labqfl.config import load_station_config

    made: list[Controller] = []

    def make(cfg: StationConfig | None = None) -> MainWindow:
        ctl = Controller(cfg if cfg is not None else load_station_config(None), data_dir=tmp_path / "data",
                         runs_dir=tmp_path / "runs")
        made.append(ctl)
        w = MainWindow(ctl)
        qtbot.addWidget(w)
        return w

    yield make
    for ctl in made:
        ctl.shutdown(20.0)


@pytest.fixture
def events(core: TestbedCore) -> EventLog:
    return EventLog(core)


def _assert_loop_responsive(ticks: list[float], elapsed: float) -> None:
    """The GUI thread served a 10 ms probe timer while workers ran.

    A loop blocked by the workers stalls for the whole window. A shared 2-core CI machine may still
    deschedule the process for a second now and then, so the stalled share of the window is bounded
    and one long hiccup is allowed, instead of demanding that no single gap ever exceeds 1 s.
    """
    assert len(ticks) > 1, "the probe timer never fired"
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    stalled = sum(g for g in gaps if g > 0.25)
    assert stalled < 0.3 * elapsed, f"GUI thread stalled {stalled:.2f} s of {elapsed:.2f} s"
    assert max(gaps) < 2.0, f"GUI thread stalled {max(gaps):.2f} s at once"


@pytest.fixture
def assert_loop_responsive() -> Callable[[list[float], float], None]:
    return _assert_loop_responsive

