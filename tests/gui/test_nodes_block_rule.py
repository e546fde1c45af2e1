"""The GUI's local set of nodes distils with ``labqfl node up``'s block sizes (review s32 M7).

Before: :meth:`NodeSet.start_local` gave its clients the block-size rule for an open-ended stream, whatever
the panel's acquisition length, so ``labqfl gui --nodes local --duration 1`` got 5.9–7.8 kbit per pair where
``labqfl node up --duration 1`` gets 13–34 kbit from the same second. Now the panel starts the set with the
rule for its chosen duration (the same settings ``node up --duration`` passes), and says so when an
acquisition of another length runs on it. The nodes-mode screenshot waits ``--after`` too (it used to take
the picture right after the results)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from labqfl.gui.controller import Controller
from labqfl.gui.main_window import MainWindow

from labqfl.app.nodes import NodeSet, NodeSetError, local_settings
from labqfl.config import load_station_config
from labqfl.contracts.types import DEFAULT_ENGINE


class _Stop(Exception):
    pass


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The settings each LocalNetwork was made with; it never starts a process (start raises _Stop)."""
    seen: list[Any] = []

    class FakeNetwork:
        def __init__(self, workdir: Path, station: Any = None, *, settings: Any = None, **kw: Any) -> None:
            seen.append(settings)

        def start(self) -> None:
            raise _Stop

    monkeypatch.setattr("labqfl.nodes.launch.LocalNetwork", FakeNetwork)
    return seen


def test_start_local_gives_the_clients_node_ups_block_rule_for_the_duration(spawned, tmp_path) -> None:
    from labqfl.cli.node import _settings

    with pytest.raises(_Stop):
        NodeSet.start_local(None, workdir=tmp_path / "w", duration_s=1.0)
    up, plan = _settings(None, None, DEFAULT_ENGINE, None, None, 1e-10, duration=1.0, what="--duration")
    assert spawned == [up] and plan is not None
    assert set(up.pair_block_slots) == {"C1-C2", "C1-C3", "C1-C4", "C2-C3", "C2-C4", "C3-C4"}
    # one block per pair of about the whole second (the stream rule's are about half a second or less)
    assert min(up.pair_block_slots.values()) > 0.9 * load_station_config(None).laser.rep_rate_hz / 6
    assert local_settings(load_station_config(None), 1.0)[0] == up


def test_start_local_without_a_duration_keeps_the_open_ended_stream_rule(spawned, tmp_path) -> None:
    with pytest.raises(_Stop):
        NodeSet.start_local(None, workdir=tmp_path / "w")
    assert spawned == [None]  # LocalNetwork's own default: the rule for an open-ended stream


def test_start_local_for_a_duration_too_short_for_key_says_so_before_any_process(spawned, tmp_path) -> None:
    with pytest.raises(NodeSetError) as e:
        NodeSet.start_local(None, workdir=tmp_path / "w", duration_s=0.001)
    assert "the acquisition (0.001 s) is too short" in str(e.value) and "choose a longer duration" in str(e.value)
    assert "\n" not in str(e.value) and spawned == []


def test_the_panel_starts_its_local_set_for_the_duration_it_shows(qtbot, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    asked: list[dict[str, Any]] = []

    def fake(cls: type, station: Any, **kw: Any) -> NodeSet:
        asked.append(kw)
        raise NodeSetError("not started in this test")

    monkeypatch.setattr(NodeSet, "start_local", classmethod(fake))
    w = MainWindow(Controller(load_station_config(None), data_dir=tmp_path / "d", runs_dir=tmp_path / "r"))
    qtbot.addWidget(w)
    p = w.nodes_panel
    p.duration.setValue(2.5)
    p.set_local(None)
    p.open_set()
    qtbot.waitUntil(lambda: bool(p.errors), timeout=10_000)
    assert asked == [{"duration_s": 2.5}]
    p.runner.nodes = SimpleNamespace(planned_duration_s=2.5)  # type: ignore[assignment]
    try:
        assert p._plan_note(2.5) == ""
        assert "planned for 2.5 s acquisitions" in p._plan_note(1.0) and "plan them for 1 s" in p._plan_note(1.0)
    finally:
        p.runner.nodes = None


def test_the_nodes_screenshot_waits_after_s(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import labqfl.gui.app as gui_app

    monkeypatch.setattr(gui_app, "_run_nodes", lambda *a, **k: {"pairs": {}})
    t0 = time.monotonic()
    rep = gui_app.screenshot(tmp_path / "n.png", tabs=["nodes"], after_s=2.0)
    assert rep["wall_s"] >= 2.0 and time.monotonic() - t0 >= 2.0
    assert (tmp_path / "n.png").is_file()
