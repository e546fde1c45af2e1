"""The station task of the GUI core: open and close the station, read and write instrument
settings, safe state — all on the core's station thread (:meth:`labqfl.gui.core.TestbedCore._submit`)."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from labqfl.gui.workers.common import log, one_line
from labqfl.gui.workers.warmup import MESSAGE as WARM_UP_MESSAGE
from labqfl.gui.workers.warmup import warm_up

from labqfl.config import StationConfig
from labqfl.errors import LabqflError
from labqfl.instruments.base import Instrument

if TYPE_CHECKING:
    from labqfl.gui.core import TestbedCore


def setting_rows(inst: Instrument) -> list[dict[str, Any]]:
    """Every declared setting of ``inst``: name, unit, doc, writable, value (or error)."""
    rows: list[dict[str, Any]] = []
    for s in inst.SETTINGS:
        row: dict[str, Any] = {"name": s.name, "unit": s.unit, "doc": s.doc, "writable": s.writable}
        try:
            v = inst.get_setting(s.name)
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, np.generic):
                v = v.item()
            row["value"] = v
        except Exception as exc:  # an unreadable setting is shown, not fatal
            row["value"] = None
            row["error"] = one_line(exc)
        rows.append(row)
    return rows


def format_value(value: Any) -> str:
    """Text shown for a setting value (floats with 6 significant digits)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "—"
    return str(value)


def parse_setting_value(text: Any, current: Any) -> Any:
    """Turn user input into a value of the same kind as ``current``.

    bool: on/off, true/false, 1/0, yes/no; int/float: a number (ints must be whole); list/dict: a
    Python literal such as ``[2, 3]`` or ``{2: 0.5}``. Raises ``ValueError`` with one line saying
    what was expected. Range checks are the instrument's (its setter raises ``ValueError``).
    """
    if not isinstance(text, str):
        if isinstance(current, bool) and not isinstance(text, bool):
            raise ValueError(f"expected on/off, got {text!r}")
        return text
    t = text.strip()
    if isinstance(current, bool):
        low = t.lower()
        if low in ("on", "true", "1", "yes"):
            return True
        if low in ("off", "false", "0", "no"):
            return False
        raise ValueError(f"expected on/off, got {t!r}")
    if isinstance(current, int):
        try:
            f = float(t)
        except ValueError:
            raise ValueError(f"expected a whole number, got {t!r}") from None
        if not f.is_integer():
            raise ValueError(f"expected a whole number, got {t!r}")
        return int(f)
    if isinstance(current, float) or current is None:
        try:
            f = float(t)
        except ValueError:
            raise ValueError(f"expected a number, got {t!r}") from None
        if not math.isfinite(f):
            raise ValueError(f"expected a finite number, got {t!r}")
        return f
    if isinstance(current, list | dict | tuple):
        try:
            v = ast.literal_eval(t)
        except (ValueError, SyntaxError):
            kind = "a list like [1, 2]" if isinstance(current, list | tuple) else "a mapping like {2: 0.5}"
            raise ValueError(f"expected {kind}, got {t!r}") from None
        if type(v) is not type(current) and not (isinstance(current, tuple) and isinstance(v, list)):
            raise ValueError(f"expected a {type(current).__name__}, got a {type(v).__name__}")
        return v
    return t


#: The unit of a detector's bias by detector type (the interface declares both: "µA or V").
BIAS_UNITS = {"snspd": ("µA", "bias current"), "spad": ("V", "excess bias voltage")}


def detector_unit(kind: str, unit: str, doc: str) -> tuple[str, str]:
    """A detector setting's (unit, description) for this detector type: the bias of an SNSPD in µA
    (a bias current), of a SPAD in V (an excess bias voltage); other settings unchanged."""
    if unit == "µA or V" and kind in BIAS_UNITS:
        u, what = BIAS_UNITS[kind]
        return u, f"{what} ({kind.upper()})"
    return unit, doc


def default_station(config: StationConfig, base_dir: Path | None) -> Any:
    """The application layer's station (:func:`labqfl.app.station.open_station`)."""
    from labqfl.app.station import open_station

    return open_station(config, base_dir=base_dir)


def simulated_roles_safe(station: Any, config: StationConfig) -> list[str]:
    """Put the simulated roles of a station just opened in their safe state: the simulator starts
    with the laser emitting, the detectors biased and the modulators on, while real drivers keep
    every output off until a procedure or Start turns it on (``drivers/_base.py``
    ``apply_operating_point``). Connect shows both kinds alike, in the safe state. Returns the roles
    whose safe state failed (logged)."""
    roles = config.roles()
    failed = []
    for role, inst in station.instruments.items():
        ic = roles.get(role)
        if ic is None or not ic.simulated:
            continue
        try:
            inst.safe_state()
        except Exception as exc:
            failed.append(role)
            log.warning("role %s: safe state after connect failed: %s", role, one_line(exc))
    return failed


class StationTask:
    """Connect/disconnect, settings and safe state of ``core``'s station (``core.station``).
    ``factory(config, base_dir)`` builds the station (tests inject failing stations)."""

    def __init__(self, core: TestbedCore, factory: Callable[[StationConfig, Path | None], Any] | None = None) -> None:
        self.core = core
        self.factory = factory or default_station

    def connect(self) -> Future[Any]:
        """Open the station (on the station thread); posts ``connected`` and ``settings``."""
        def job() -> None:
            if self.core.station is not None:
                return
            self.core._set_busy("station", True)
            try:
                # the instruments first: a wrong address or a missing VISA library is reported at once,
                # not after the first-use warm-up (about a minute on an empty compile cache)
                self.core.post("progress", ("station", None, f"opening station {self.core.config.name!r}…"))
                try:
                    st = self.factory(self.core.config, self.core.base_dir)
                except Exception as exc:
                    self.core.post("progress", ("station", 0.0, f"connect failed: {one_line(exc)}"))
                    raise
                try:
                    simulated_roles_safe(st, self.core.config)
                    self.core.post("progress", ("station", None, WARM_UP_MESSAGE))
                    try:
                        log.info("first-use imports and compiled code loaded in %.2f s", warm_up(self.core.config))
                    except Exception as exc:  # only a head start: the workers load the same at first use
                        log.warning("first-use set-up skipped: %s", one_line(exc))
                except BaseException:
                    st.close()
                    raise
            finally:
                self.core._set_busy("station", False)
            self.core.station = st
            roles = {}
            for role, ic in self.core.config.roles().items():
                inst = st.instruments.get(role)
                roles[role] = {"driver": ic.driver, "simulated": ic.simulated,
                               "kind": type(inst).__name__ if inst is not None else None,
                               "error": st.failures.get(role) if hasattr(st, "failures") else None}
            ok, why = self.core.distill_available()
            log.info("station %s connected: %d roles", self.core.config.name, len(st.instruments))
            self.core.post("connected", {"station": self.core.config.name, "description": self.core.config.description,
                                    "roles": roles, "failures": dict(getattr(st, "failures", {})),
                                    "distill_available": ok, "distill_reason": why,
                                    "pairs": [f"{a}-{b}" for a, b in self.core.config.pairs()],
                                    "detectors": list(self.core.config.detectors)})
            self.core.post("settings", self.rows())
            self.core.post("progress", ("station", 1.0, "station connected"))
            self.core._acquisition_task.post_pools()
        return self.core._submit(job, "Connect failed")

    def disconnect(self) -> Future[Any]:
        """Stop acquisition, put every instrument in its safe state and close the station."""
        self.core.stop_acquisition()
        self.core.cancel_calibration()

        def job() -> None:
            for th in (*self.core._acquisition_task.threads(), self.core._calibration_task.thread):
                self.core._join(th, 30.0)
            self.close_station()
        return self.core._submit(job, "Disconnect failed")

    def close_station(self) -> None:
        st, self.core.station = self.core.station, None
        if st is None:
            return
        failed = st.safe_state()
        self.core.post("safe", failed)
        st.close()
        log.info("station %s: instruments in safe state and closed", self.core.config.name)
        self.core.post("disconnected", {})

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        st = self.core.station
        if st is None:
            return {}
        out = {role: setting_rows(inst) for role, inst in st.instruments.items()}
        for role, det in self.core.config.detectors.items():
            for row in out.get(role, []):
                row["unit"], row["doc"] = detector_unit(det.kind, row["unit"], row["doc"])
        return out

    def refresh_settings(self) -> Future[Any]:
        def job() -> None:
            if self.core.station is not None:
                self.core.post("settings", self.rows())
        return self.core._submit(job, "Reading settings failed")

    def set_setting(self, role: str, name: str, value: Any) -> Future[Any]:
        """Write one setting (text is parsed like the current value). Posts ``setting_applied``
        with the value read back, or ``setting_rejected`` with the instrument's message."""
        def job() -> None:
            st = self.core.station
            if st is None:
                self.core.post("setting_rejected", (role, name, "not connected"))
                return
            try:
                inst = st[role]
                spec = next((s for s in inst.SETTINGS if s.name == name), None)
                if spec is None:
                    raise ValueError(f"{role} has no setting {name!r}")
                if not spec.writable:
                    raise ValueError(f"{role}.{name} is read-only")
                current = inst.get_setting(name)
                new = parse_setting_value(value, current)
                setattr(inst, name, new)
                back = inst.get_setting(name)
            except (ValueError, TypeError, LabqflError) as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("setting %s.%s rejected: %s", role, name, msg)
                self.core.post("setting_rejected", (role, name, msg))
                return
            if isinstance(back, np.generic):
                back = back.item()
            log.info("setting %s.%s = %s", role, name, format_value(back))
            self.core.post("setting_applied", (role, name, back))
        return self.core._submit(job, f"Setting {role}.{name} failed")

    def safe_state(self) -> Future[Any]:
        """Stop acquisition and put every instrument in its safe state (station stays open)."""
        self.core.stop_acquisition()

        def job() -> None:
            self.core._join(self.core._acquisition_task.threads()[0], 30.0)
            if self.core.station is not None:
                failed = self.core.station.safe_state()
                self.core.post("safe", failed)
                log.info("station %s: safe state", self.core.config.name)
                self.core.post("settings", self.rows())
        return self.core._submit(job, "Safe state failed")
