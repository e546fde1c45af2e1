"""Review s37 lab3 L8: the visibility, Vπ and efficiency procedures switched the laser on before they biased the
detectors. That was safe only because every shutter starts closed, and a client without shutters (pattern
generators) lit the detectors while they were biased. They now bias the detectors first, in the dark, then switch
the laser on, as arming does (labqfl.station.arming_settings). Each procedure runs on stand-ins up to its gate
optimisation, which ends it here, and the settings it made are recorded in order."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest


class _Stop(Exception):
    pass


class _Guard:
    def __init__(self) -> None:
        self.sets: list[tuple[str, str, Any]] = []

    def set(self, inst: Any, attr: str, value: Any) -> None:
        self.sets.append((inst.name, attr, value))


def _ctx() -> Any:
    det = {d: SimpleNamespace(name=d) for d in ("D0", "D1")}
    tt = SimpleNamespace(name="time_tagger", channels=[1, 2, 3])
    cfg = SimpleNamespace(client_names=["C1", "C2"], time_tagger=SimpleNamespace(sync_channel=1))
    station = SimpleNamespace(laser=SimpleNamespace(name="laser"), detector=det.__getitem__, time_tagger=tt)
    return SimpleNamespace(config=cfg, station=station)


def _stop(*a: Any, **k: Any) -> None:
    raise _Stop


def _order(sets: list[tuple[str, str, Any]]) -> list[str]:
    return [name for name, attr, value in sets if (attr, value) in (("enabled", True), ("output_enabled", True))]


def test_visibility_biases_the_detectors_before_the_laser(monkeypatch: pytest.MonkeyPatch) -> None:
    from labqfl.calibration import visibility

    monkeypatch.setattr(visibility, "gates_to_optimum", _stop)
    guard = _Guard()
    with pytest.raises(_Stop):
        visibility._prepare_pair(_ctx(), guard, "C1", "C2", False)  # type: ignore[arg-type]
    assert _order(guard.sets) == ["D0", "D1", "laser"]  # before: laser, D0, D1


def test_efficiency_biases_the_detectors_before_the_laser(monkeypatch: pytest.MonkeyPatch) -> None:
    from labqfl.calibration import detection_efficiency, detector

    monkeypatch.setattr(detection_efficiency, "gates_to_optimum", _stop)
    monkeypatch.setattr(detector, "detector_channel", lambda cfg, d: {"D0": 2, "D1": 3}[d])
    guard = _Guard()
    with pytest.raises(_Stop):
        detection_efficiency._isolate_source(_ctx(), guard, ("D0", "D1"), "C1")  # type: ignore[arg-type]
    assert _order(guard.sets) == ["D0", "D1", "laser"]


def test_vpi_biases_the_detectors_before_the_laser(monkeypatch: pytest.MonkeyPatch) -> None:
    from labqfl.calibration import phase_modulator

    guard = _Guard()

    @contextmanager
    def guarded(ctx: Any, what: str) -> Any:
        yield guard

    monkeypatch.setattr(phase_modulator, "guarded", guarded)
    monkeypatch.setattr(phase_modulator, "gates_to_optimum", _stop)
    with pytest.raises(_Stop):
        phase_modulator.vpi_bias(_ctx())  # type: ignore[arg-type]
    assert _order(guard.sets) == ["D0", "D1", "laser"]
