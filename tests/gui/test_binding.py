"""The Qt binding under the GUI keeps the bools' reference counts (issue 19, item 1).

PySide6 6.12.0 on Python 3.11 loses one reference to ``True`` per ``SignalInstance.emit()``
(any signal, any payload), and the GUI aborted at exit with "Fatal Python error: bool_dealloc".
These tests fail on such a binding; ``pyproject.toml`` keeps it out of an install and
:mod:`labqfl.gui.binding` refuses to start the GUI on one installed some other way.
"""

from __future__ import annotations

import ctypes
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from labqfl.gui import binding
from labqfl.gui.controller import Controller
from packaging.requirements import Requirement
from packaging.version import Version
from PySide6.QtCore import Signal

#: A payload of each Controller signal; bool-carrying signals get both True and False.
PAYLOADS: dict[str, list[tuple[Any, ...]]] = {
    "connectedChanged": [(True,), (False,)],
    "stationInfo": [({"station": "s", "distill_available": True, "pairs": ["C1-C2"]},)],
    "settingsSnapshot": [({"laser": [{"name": "output_enabled", "writable": True, "value": False}]},)],
    "settingApplied": [("D1", "enabled", False), ("D1", "enabled", True)],
    "settingRejected": [("laser", "power_mw", "power_mw must be in [0, 100] mW")],
    "countRates": [([(0.1, {"D0": 1.0e5, "D1": 1.0e5, "sync": 1.0e8})],)],
    "pairMetrics": [({"t_s": 1.0, "pairs": {"C1-C2": {"qber_x": None, "blocks": 0}}, "final": True},)],
    "keyPools": [({"C1-C2": {"auth": 4096, "general": 0}},)],
    "keyProvenance": [({"C1-C2": {"blocks": {"simulated/csprng": 1}, "information_theoretic": False}},)],
    "acquisitionStatus": [({"t_s": 1.0, "tags": 10, "blocks": 1, "wall_s": 1.0},)],
    "calibrationResult": [({"procedure": "vpi", "quantities": [], "plots": []},)],
    "trainingStarted": [({"task": "mnist-qnn", "keys": "csprng", "rounds": 2},)],
    "trainingRound": [({"metrics": {"round": 1, "test_accuracy": 0.5}, "clients": {}, "available_bits": {}},)],
    "trainingFinished": [({"stopped": False},), ({"stopped": True},)],
    "logRecords": [([{"time": 0.0, "level": "INFO", "levelno": 20, "name": "labqfl", "source": "", "message": "m"}],)],
    "errorOccurred": [("Acquisition failed", "USB link lost")],
    "progress": [("training", 0.5, "round 1/2"), ("station", -1.0, "opening")],
    "busyChanged": [("acquisition", True), ("acquisition", False)],
    "safeStateReached": [({},)],
    "shutdownFinished": [()],
}
#: Emissions per signal and payload ("a few thousand" per signal in all).
EMITS = 1500
#: References another thread may take or drop meanwhile; a faulty binding loses one per emission.
TOLERANCE = 16


@pytest.fixture
def ctl(qtbot, small_config, tmp_path):  # type: ignore[no-untyped-def]
    c = Controller(small_config, data_dir=tmp_path / "data", runs_dir=tmp_path / "runs")
    yield c
    c.shutdown(20.0)


def test_every_controller_signal_keeps_the_bools_reference_counts(ctl: Controller) -> None:
    names = sorted(k for k, v in vars(Controller).items() if isinstance(v, Signal))
    assert names == sorted(PAYLOADS), "a Controller signal without a payload in PAYLOADS"
    received = dict.fromkeys(names, 0)
    for name in names:
        def slot(*_args: Any, name: str = name) -> None:
            received[name] += 1
        getattr(ctl, name).connect(slot)
    for name, payloads in PAYLOADS.items():
        sig = getattr(ctl, name)
        for args in payloads:
            def emit(sig: Any = sig, args: tuple[Any, ...] = args) -> None:
                sig.emit(*args)
            # a short first round: a faulty binding fails here, long before True runs out of references
            for n in (100, EMITS - 100):
                lost_true, lost_false = binding.emit_refcount_loss(n, emit)
                assert abs(lost_true) <= TOLERANCE and abs(lost_false) <= TOLERANCE, (
                    f"{name}{args!r}: {n} emissions lost {lost_true} references to True and {lost_false} to False")
    assert received == {k: EMITS * len(v) for k, v in PAYLOADS.items()}


def test_the_installed_binding_passes_the_startup_check(qtbot) -> None:  # type: ignore[no-untyped-def]
    assert max(map(abs, binding.emit_refcount_loss(1000))) <= TOLERANCE
    assert binding.binding_problem() is None
    binding.check_binding()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="True is immortal from Python 3.12 (PEP 683)")
def test_the_startup_check_finds_an_emit_that_drops_a_reference() -> None:
    decref = ctypes.pythonapi.Py_DecRef
    decref.argtypes = [ctypes.py_object]
    decref.restype = None
    before = sys.getrefcount(True)
    problem = binding.binding_problem(64, emit=lambda: decref(True))  # what 6.12.0's emit() does
    assert abs(sys.getrefcount(True) - before) <= 2  # the probe gave back what the faulty emit took
    assert problem is not None and "64 in 64 emissions" in problem and binding.REMEDY in problem
    assert binding.binding_problem(64, emit=lambda: None) is None


def test_labqfl_gui_refuses_a_faulty_binding_with_one_line(qtbot, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from labqfl.cli import app

    monkeypatch.setattr(binding, "emit_refcount_loss", lambda n=binding.PROBE_EMITS, emit=None: (n, 0))
    res = CliRunner().invoke(app, ["gui", "--screenshot", str(tmp_path / "x.png"), "--after", "0"])
    assert res.exit_code == 1, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bool_dealloc" in errors[0] and binding.REMEDY in errors[0], res.stderr
    assert "Traceback" not in res.output
    assert not (tmp_path / "x.png").exists()


def test_pyproject_excludes_the_faulty_binding_on_python_before_3_12() -> None:
    deps = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps if Requirement(d).name.lower() == "pyside6-essentials"]

    def allowed(python: str, pyside: str) -> bool:
        env = {"python_version": python, "python_full_version": f"{python}.0"}
        active = [r for r in reqs if r.marker is None or r.marker.evaluate(env)]
        assert len(active) == 1, f"Python {python}: {len(active)} PySide6-Essentials requirements apply"
        return active[0].specifier.contains(Version(pyside))

    assert not allowed("3.11", "6.12.0")
    assert allowed("3.11", "6.11.3") and allowed("3.11", "6.10.3")
    assert allowed("3.12", "6.12.0") and allowed("3.13", "6.12.0")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert allowed(here, version("PySide6-Essentials")), "the installed PySide6 breaks the constraint"
