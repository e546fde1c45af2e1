"""The calibration task of the GUI core: the calibration groups it offers and the calibration
thread (:func:`labqfl.app.calibrate.run_calibration` on the connected station)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labqfl.gui.workers.common import Cancelled, log, one_line

if TYPE_CHECKING:
    from labqfl.gui.core import TestbedCore


@dataclass(frozen=True)
class CalibrationSpec:
    """A calibration group the GUI can launch (``labqfl calibrate GROUP``)."""

    name: str
    title: str
    description: str


#: Titles and one-line descriptions of the groups of :func:`labqfl.calibration.calibrate`.
CALIBRATION_TEXT = {
    "detector": ("Detectors", "Dead time and afterpulsing, dark counts versus bias, gate delay, timing jitter and "
                 "detection efficiency of D0 and D1 (laser off / attenuated light; power meter as reference)."),
    "delays": ("Channel delays", "Delay of each detector channel after the laser sync, from the folded click-time "
               "histogram (coarse search, then a Gaussian peak fit)."),
    "vpi": ("Phase modulators Vπ", "Half-wave voltage Vπ and bias phase of every client's phase modulator from a "
            "fringe scan (DC voltage sweep against a reference client)."),
    "visibility": ("Loop visibility", "Interference visibility of a pair of clients from a phase scan."),
    "all": ("All", "Detectors, channel delays, phase modulators and visibility, in that order."),
}


def discover_calibrations() -> tuple[list[CalibrationSpec], str]:
    """Calibration groups of :mod:`labqfl.calibration`, or ``([], reason)`` when unavailable."""
    try:
        from labqfl.app.calibrate import groups

        names = groups()
    except Exception as exc:  # pragma: no cover - depends on the installation
        return [], f"labqfl.calibration is not available: {one_line(exc)}"
    specs = []
    for g in names:
        title, desc = CALIBRATION_TEXT.get(g, (g, ""))
        specs.append(CalibrationSpec(g, title, desc))
    return specs, ""


class CalibrationTask:
    """One calibration at a time on ``core``'s connected station, cancellable between steps."""

    def __init__(self, core: TestbedCore) -> None:
        self.core = core
        self._cal_thread: threading.Thread | None = None
        self._cal_cancel = threading.Event()

    def calibrations(self) -> tuple[list[CalibrationSpec], str]:
        return discover_calibrations()

    def run_calibration(self, name: str, **kwargs: Any) -> None:
        """Run one calibration procedure on its own thread (acquisition must be stopped)."""
        specs, why = self.calibrations()
        spec = next((s for s in specs if s.name == name), None)
        with self.core._lock:
            if spec is None:
                self.core._error("Cannot calibrate", why or f"no calibration procedure {name!r}")
                return
            if self.core.station is None:
                self.core._error("Cannot calibrate", "the station is not connected; press Connect first")
                return
            if self.core.busy("acquisition") or self.core.busy("calibration"):
                self.core._error("Cannot calibrate", "stop the acquisition (or the running calibration) first")
                return
            self._cal_cancel.clear()
            self.core._set_busy("calibration", True)
            self._cal_thread = self.core._thread(self._calibrate, (spec, kwargs), "labqfl-calibration")
            self._cal_thread.start()

    @property
    def thread(self) -> threading.Thread | None:
        """The calibration thread (None if none was started)."""
        return self._cal_thread

    def cancel_calibration(self) -> None:
        """Stop the running calibration at its next step (settings restored, safe state)."""
        self._cal_cancel.set()

    def _calibrate(self, spec: CalibrationSpec, kwargs: dict[str, Any]) -> None:
        from labqfl.app.calibrate import run_calibration

        t0 = time.perf_counter()

        def result(status: str, **extra: Any) -> dict[str, Any]:
            """The ``calibration_result`` event: ``status`` done / partial (some procedures failed) /
            failed (nothing calibrated) / cancelled; nothing calibrated has no files to offer."""
            data: dict[str, Any] = {"procedure": spec.name, "title": spec.title, "status": status, "quantities": [],
                                    "plots": [], "run": "", "station_toml": "", "failures": {}, "succeeded": 0,
                                    "seconds": time.perf_counter() - t0}
            data.update(extra)
            return data

        try:
            def progress(message: str) -> None:
                if self._cal_cancel.is_set():
                    raise Cancelled(f"calibration {spec.name} cancelled by the user")
                self.core.post("progress", ("calibration", None, message))

            self.core.post("progress", ("calibration", None, f"{spec.title}…"))
            outcome = run_calibration(self.core.config, spec.name, runs_dir=self.core.runs_dir, progress=progress,
                                      station=self.core.station, base_dir=self.core.base_dir, **kwargs)
            quantities = outcome.quantity_rows()
            failures = outcome.failures
            succeeded = len(outcome.report.results)
            status = "failed" if failures and not succeeded else ("partial" if failures else "done")
            data = result(status, quantities=quantities, plots=outcome.plots(), run=outcome.files.get("run", ""),
                          station_toml=outcome.files.get("station_toml", "") if succeeded else "",
                          failures=failures, succeeded=succeeded)
            log.info("calibration %s %s in %.1f s: %d quantities; calibrated station file %s", spec.name, status,
                     data["seconds"], len(quantities), data["station_toml"] or "(none)")
            self.core.post("calibration_result", data)
            if status == "done":
                self.core.post("progress", ("calibration", 1.0, f"{spec.title} done"))
            elif status == "failed":
                self.core.post("progress", ("calibration", 0.0, "failed: " + failure_reason(failures)))
                self.core._error(f"Calibration {spec.title} failed", "; ".join(failures.values()))
            else:  # the other procedures ran and were saved; say which did not
                self.core.post("progress", ("calibration", 1.0, f"partial: {len(failures)} of "
                                            f"{len(failures) + succeeded} procedures failed ({', '.join(failures)})"))
                self.core._error(f"Calibration {spec.title}: {len(failures)} procedure(s) failed",
                                 "; ".join(failures.values()))
        except Exception as exc:
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, Cancelled):
                cause = cause.__cause__
            if isinstance(cause, Cancelled):
                log.warning("%s (settings restored, instruments in safe state)", cause)
                self.core.post("calibration_result", result("cancelled"))
                self.core.post("progress", ("calibration", 0.0, "cancelled; instruments in safe state"))
            else:
                self.core.post("calibration_result", result("failed", failures={spec.name: one_line(exc)}))
                self.core.post("progress", ("calibration", 0.0, "failed: " + one_line(exc)))
                self.core._error(f"Calibration {spec.title} failed", exc)
        finally:
            if self.core.station is not None:
                self.core.post("settings", self.core._station_task.rows())
            self.core._set_busy("calibration", False)


def failure_reason(failures: dict[str, str]) -> str:
    """One line for the status: each failed procedure's reason without the library's
    "calibration NAME failed: " prefix and "; instruments put in their safe state …" suffix."""
    out = []
    for name, msg in failures.items():
        text = msg
        prefix = f"calibration {name} failed: "
        if text.startswith(prefix):
            text = text[len(prefix):]
        text = text.split("; instruments put in their safe state")[0]
        out.append(text if len(failures) == 1 else f"{name}: {text}")
    return "; ".join(out)
