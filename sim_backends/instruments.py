"""Simulated instruments: every interface of :mod:`labqfl.instruments.interfaces`, backed by one
shared :class:`~labqfl.sim_backends.testbed.SagnacTestbed`.

Each setting is validated (``ValueError`` naming the setting and its valid range), guarded by the
instrument's ``RLock`` and written into the testbed's live state, which the physics reads at the
start of every block: laser off → no photon clicks; detector disabled → no clicks on it;
attenuator → that client's intensities; phase-modulator Vπ / bias settings → the applied phases.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from labqfl.sim_backends.testbed import SagnacTestbed

from labqfl.config import StationConfig
from labqfl.instruments.base import Instrument, Setting, TagBlock
from labqfl.instruments.interfaces import (
    PhaseModulator,
    PhotonDetector,
    PowerMeter,
    PulsedLaser,
    TimeTagger,
    VariableAttenuator,
)

_VENDOR = "labqfl"
_FW = "sim-1.0"


def _check_range(name: str, value: Any, lo: float, hi: float, unit: str = "", *, lo_open: bool = False) -> float:
    """``float(value)`` if it lies in [lo, hi] (or (lo, hi]); else ValueError naming the setting."""
    rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]" + (f" {unit}" if unit else "")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in {rng}, got {value!r}") from None
    if not (math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi):
        raise ValueError(f"{name} must be in {rng}, got {value!r}")
    return v


def _check_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")


class _LiveSetting:
    """A setting kept in the testbed's live state (declarative, like PyMeasure's ``control``):
    ``check(instrument, value)`` validates (ValueError naming the setting), then the value is
    stored under the instrument's and the testbed's locks and the testbed is told."""

    def __init__(self, attr: str, check: Any) -> None:
        self.attr = attr
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj._live(), self.attr)

    def __set__(self, obj: Any, value: Any) -> None:
        obj._set(self.attr, self.check(obj, value))


class _SimMixin:
    """Shared plumbing: testbed, identity, writes into the testbed's live state."""

    testbed: SagnacTestbed
    _model: str
    lock: Any

    def _live(self) -> Any:
        """The testbed's live state object that holds this instrument's settings."""
        raise NotImplementedError

    def _set(self, attr: str, value: Any) -> None:
        with self.lock, self.testbed.lock:
            setattr(self._live(), attr, value)
            self.testbed.touch()

    def identity(self) -> str:
        return f"{_VENDOR},{self._model},SIM-{self.name},{_FW}"  # type: ignore[attr-defined]


class SimulatedLaser(_SimMixin, PulsedLaser):
    """Simulated pulsed laser of the central node (starts emitting; safe state = off)."""

    _model = "SimPulsedLaser"

    def __init__(self, name: str, testbed: SagnacTestbed) -> None:
        super().__init__(name, "sim")
        self.testbed = testbed

    def _live(self):  # type: ignore[no-untyped-def]
        return self.testbed.live

    def _check_output(self, value: Any) -> bool:
        v = _check_bool("output_enabled", value)
        self.log.info("output %s", "on" if v else "off")
        return v

    output_enabled: bool = _LiveSetting("laser_on", lambda s, v: s._check_output(v))  # type: ignore[assignment]
    rep_rate_hz: float = _LiveSetting("rep_rate_hz", lambda _s, v: _check_range("rep_rate_hz", v, 1e3, 10e9, "Hz"))  # type: ignore[assignment]
    power_mw: float = _LiveSetting("power_mw", lambda _s, v: _check_range("power_mw", v, 0.0, 100.0, "mW"))  # type: ignore[assignment]
    wavelength_nm: float = _LiveSetting("wavelength_nm", lambda _s, v: _check_range("wavelength_nm", v, 1260.0, 1650.0, "nm"))  # type: ignore[assignment]

    def status(self) -> dict[str, Any]:
        return {**super().status(), "output_enabled": self.output_enabled, "power_mw": self.power_mw}


class SimulatedPhaseModulator(_SimMixin, PhaseModulator):
    """A client's simulated phase modulator + AWG.

    Normally the client's generator drives it: per window the client writes its drive pattern
    (intensity level and phase index per slot, :meth:`..qrng.CsprngChoiceLog.fill_codes`), the
    stream a hardware pattern generator would receive, and the physics reads only that.
    ``load_pattern`` replaces the phase indices by a repeating pattern (index ``slot % len``);
    ``set_dc_voltage`` holds a constant level on this client's pulse (and its signal intensity),
    the Vπ fringe-scan mode; ``clear_dc`` / ``clear_pattern`` return to the generator's drive.
    """

    _model = "SimPhaseModulator"

    def __init__(self, name: str, testbed: SagnacTestbed, client: str) -> None:
        super().__init__(name, "sim")
        self.testbed = testbed
        self.client = client

    def _live(self):  # type: ignore[no-untyped-def]
        return self.testbed.live.clients[self.client]

    output_enabled: bool = _LiveSetting("pm_enabled", lambda _s, v: _check_bool("output_enabled", v))  # type: ignore[assignment]
    v_pi_v: float = _LiveSetting("v_pi_set", lambda _s, v: _check_range("v_pi_v", v, 0.0, 20.0, "V", lo_open=True))  # type: ignore[assignment]
    bias_phase_rad: float = _LiveSetting("bias_set", lambda _s, v: _check_range("bias_phase_rad", v, -4 * math.pi, 4 * math.pi, "rad"))  # type: ignore[assignment]
    gate_delay_ps: float = _LiveSetting("gate_delay_set_ps", lambda _s, v: _check_range("gate_delay_ps", v, -1e9, 1e9, "ps"))  # type: ignore[assignment]
    amplitude_vpp: float = _LiveSetting("amplitude_vpp", lambda _s, v: _check_range("amplitude_vpp", v, 0.0, 40.0, "V"))  # type: ignore[assignment]

    @property
    def dc_voltage(self) -> float | None:
        """The DC level in volts, or None when the QRNG/pattern drives the modulator."""
        return self._live().dc_volts

    def load_pattern(self, phase_indices: np.ndarray) -> None:
        arr = np.asarray(phase_indices)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"phase pattern must be a non-empty 1-D array, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 3:
            raise ValueError("phase pattern entries must be integers in 0..3 (phase index a, phase a·π/2)")
        with self.lock, self.testbed.lock:
            cl = self._live()
            cl.pattern = arr.astype(np.uint8).copy()
            cl.dc_volts = None
            self.testbed.touch()

    def clear_pattern(self) -> None:
        self._set("pattern", None)

    def set_dc_voltage(self, volts: float) -> None:
        self._set("dc_volts", _check_range("dc voltage", volts, -20.0, 20.0, "V"))

    def clear_dc(self) -> None:
        self._set("dc_volts", None)


class SimulatedAttenuator(_SimMixin, VariableAttenuator):
    """A client's simulated variable attenuator. Intensities are the configured ones at the
    nominal attenuation (``options.nominal_attenuation_db``, default min(50 dB, max range)) and
    scale as 10^(−Δ/10) with the change Δ of the attenuation."""

    _model = "SimVOA"

    def __init__(self, name: str, testbed: SagnacTestbed, client: str, max_attenuation_db: float) -> None:
        super().__init__(name, "sim")
        self.testbed = testbed
        self.client = client
        self.max_attenuation_db = float(max_attenuation_db)
        self._wavelength = testbed.config.laser.wavelength_nm

    def _live(self):  # type: ignore[no-untyped-def]
        return self.testbed.live.clients[self.client]

    attenuation_db: float = _LiveSetting("attenuation_db", lambda s, v: _check_range("attenuation_db", v, 0.0, s.max_attenuation_db, "dB"))  # type: ignore[assignment]
    shutter_closed: bool = _LiveSetting("shutter_closed", lambda _s, v: _check_bool("shutter_closed", v))  # type: ignore[assignment]

    @property
    def wavelength_nm(self) -> float:  # type: ignore[override]
        return self._wavelength

    @wavelength_nm.setter
    def wavelength_nm(self, value: float) -> None:
        with self.lock:
            self._wavelength = _check_range("wavelength_nm", value, 1260.0, 1650.0, "nm")


class SimulatedDetector(_SimMixin, PhotonDetector):
    """Simulated SNSPD / SPAD. Dark-count rate follows the bias: DCR₀·exp((bias − bias₀)/scale)
    with scale ``options.dark_bias_scale`` (1 µA SNSPD, 0.5 V SPAD); efficiency is the
    ``efficiency`` setting."""

    _model = "SimSPD"

    def __init__(self, name: str, testbed: SagnacTestbed) -> None:
        super().__init__(name, "sim")
        self.testbed = testbed
        self._kind = testbed.config.detectors[name].kind
        self._temperature = testbed.config.detectors[name].temperature_k

    def _live(self):  # type: ignore[no-untyped-def]
        return self.testbed.live.detectors[self.name]

    enabled: bool = _LiveSetting("enabled", lambda _s, v: _check_bool("enabled", v))  # type: ignore[assignment]
    efficiency: float = _LiveSetting("efficiency", lambda _s, v: _check_range("efficiency", v, 0.0, 1.0, "", lo_open=True))  # type: ignore[assignment]

    def _check_bias(self, value: Any) -> float:
        snspd = self._kind == "snspd"
        return _check_range("bias", value, 0.0, 30.0 if snspd else 10.0, "µA" if snspd else "V")

    bias: float = _LiveSetting("bias", lambda s, v: s._check_bias(v))  # type: ignore[assignment]
    dead_time_ns: float = _LiveSetting("dead_time_ns", lambda _s, v: _check_range("dead_time_ns", v, 0.0, 1e5, "ns"))  # type: ignore[assignment]
    gated: bool = _LiveSetting("gated", lambda _s, v: _check_bool("gated", v))  # type: ignore[assignment]
    gate_width_ns: float = _LiveSetting("gate_width_ns", lambda _s, v: _check_range("gate_width_ns", v, 0.0, 1e3, "ns", lo_open=True))  # type: ignore[assignment]
    gate_delay_ps: float = _LiveSetting("gate_delay_ps", lambda _s, v: _check_range("gate_delay_ps", v, -1e9, 1e9, "ps"))  # type: ignore[assignment]

    @property
    def temperature_k(self) -> float:
        return self._temperature

    def dark_count_rate_hz(self) -> float:
        """True dark-count rate at the current bias [Hz] (simulator truth)."""
        d = self._live()
        return d.dcr_hz() if d.enabled else 0.0

    def count_rate_hz(self, integration_s: float = 0.1) -> float:
        t = _check_range("integration_s", integration_s, 0.0, 3600.0, "s", lo_open=True)
        with self.lock:
            return self.testbed.detector_count_rates(t)[self.name]

    def status(self) -> dict[str, Any]:
        return {**super().status(), "enabled": self.enabled, "temperature_k": self.temperature_k}


class SimulatedTimeTagger(_SimMixin, TimeTagger):
    """Simulated time tagger streaming the testbed's tags (int64 ps, int16 channels)."""

    _model = "SimTimeTagger"

    def __init__(self, name: str, testbed: SagnacTestbed) -> None:
        super().__init__(name, "sim")
        self.testbed = testbed
        tt = testbed.config.time_tagger
        self._all_channels = sorted({tt.sync_channel, *tt.detector_channels.values(),
                                     *([tt.marker_channel] if tt.marker_channel is not None else [])})

    @property
    def channels(self) -> list[int]:  # type: ignore[override]
        return sorted(self.testbed.live.enabled_channels)

    @channels.setter
    def channels(self, value: list[int]) -> None:
        chans = list(value)
        bad = [c for c in chans if c not in self._all_channels]
        if bad:
            raise ValueError(f"channels must be a subset of {self._all_channels}, got {chans}")
        with self.lock, self.testbed.lock:
            self.testbed.live.enabled_channels = set(chans)
            self.testbed.touch()

    @property
    def trigger_levels_v(self) -> dict[int, float]:  # type: ignore[override]
        return dict(self.testbed.live.trigger_levels_v)

    @trigger_levels_v.setter
    def trigger_levels_v(self, value: dict[int, float]) -> None:
        new = {}
        for ch, v in dict(value).items():
            if ch not in self._all_channels:
                raise ValueError(f"trigger_levels_v: channel must be one of {self._all_channels}, got {ch!r}")
            new[ch] = _check_range(f"trigger_levels_v[{ch}]", v, -2.5, 2.5, "V")
        with self.lock, self.testbed.lock:
            self.testbed.live.trigger_levels_v.update(new)
            self.testbed.touch()

    @property
    def input_delays_ps(self) -> dict[int, int]:  # type: ignore[override]
        return {ch: self.testbed.live.input_delays_ps.get(ch, 0) for ch in self._all_channels}

    @input_delays_ps.setter
    def input_delays_ps(self, value: dict[int, int]) -> None:
        new = {}
        for ch, v in dict(value).items():
            if ch not in self._all_channels:
                raise ValueError(f"input_delays_ps: channel must be one of {self._all_channels}, got {ch!r}")
            new[ch] = int(round(_check_range(f"input_delays_ps[{ch}]", v, -1e6, 1e6, "ps")))
        with self.lock, self.testbed.lock:
            self.testbed.live.input_delays_ps.update(new)
            self.testbed.touch()

    @property
    def resolution_ps(self) -> float:
        return self.testbed.config.time_tagger.resolution_ps

    @property
    def acquisition_epoch(self) -> int | None:
        """Epoch of the latest :meth:`stream` (public: it names the acquisition; a CSPRNG client's
        choices do not depend on it)."""
        return self.testbed.last_epoch

    def client_logs(self) -> dict[str, Any]:
        """The simulated clients' own logs of the latest acquisition (their side of the station;
        :meth:`SagnacTestbed.client_logs`)."""
        return self.testbed.client_logs()

    def stream(self, duration_s: float, block_duration_s: float | None = None) -> Iterator[TagBlock]:
        d = _check_range("duration_s", duration_s, 0.0, 1e7, "s", lo_open=True)
        if block_duration_s is not None:
            _check_range("block_duration_s", block_duration_s, 0.0, 1e7, "s", lo_open=True)
        with self.lock:
            return self.testbed.stream(d, block_duration_s)

    def count_rates(self, integration_s: float = 0.1) -> dict[int, float]:
        t = _check_range("integration_s", integration_s, 0.0, 3600.0, "s", lo_open=True)
        with self.lock:
            return self.testbed.count_rates(t)

    def histogram(self, start_channel: int, click_channel: int, binwidth_ps: int, n_bins: int,
                  integration_s: float) -> np.ndarray:
        for nm, ch in (("start_channel", start_channel), ("click_channel", click_channel)):
            if ch not in self._all_channels:
                raise ValueError(f"{nm} must be one of {self._all_channels}, got {ch!r}")
        bw = int(_check_range("binwidth_ps", binwidth_ps, 1, 1e12, "ps"))
        nb_ = int(_check_range("n_bins", n_bins, 1, 1e8))
        t = _check_range("integration_s", integration_s, 0.0, 3600.0, "s", lo_open=True)
        with self.lock:
            return self.testbed.histogram(start_channel, click_channel, bw, nb_, t)


class SimulatedPowerMeter(_SimMixin, PowerMeter):
    """Simulated optical power meter on a calibration tap.

    ``tap``: ``"laser"`` (the laser's monitor tap, ``options.laser_tap_ratio`` = 0.01 of its power)
    or a client name (the power that client sends at its signal level). Readings carry Gaussian
    noise of ``options.noise_rel`` (1e-3) / √averaging and ``options.noise_floor_w`` (1e-12 W).
    """

    _model = "SimPowerMeter"
    SETTINGS = (*PowerMeter.SETTINGS, Setting("tap", "", "which calibration tap the head sits on"))

    def __init__(self, name: str, testbed: SagnacTestbed, options: dict[str, Any]) -> None:
        super().__init__(name, "sim")
        self.testbed = testbed
        pm = testbed.config.power_meter
        self._wavelength = pm.wavelength_nm
        self._averaging = 1
        self._tap = "laser"
        self._tap_ratio = float(options.get("laser_tap_ratio", 0.01))
        self._noise_rel = float(options.get("noise_rel", 1e-3))
        self._noise_floor = float(options.get("noise_floor_w", 1e-12))
        self._rng = np.random.default_rng([testbed.config.simulation.seed, 0x504D])

    @property
    def wavelength_nm(self) -> float:  # type: ignore[override]
        return self._wavelength

    @wavelength_nm.setter
    def wavelength_nm(self, value: float) -> None:
        with self.lock:
            self._wavelength = _check_range("wavelength_nm", value, 800.0, 1700.0, "nm")

    @property
    def averaging(self) -> int:  # type: ignore[override]
        return self._averaging

    @averaging.setter
    def averaging(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= int(value) <= 10000:
            raise ValueError(f"averaging must be an integer in [1, 10000], got {value!r}")
        with self.lock:
            self._averaging = int(value)

    @property
    def tap(self) -> str:
        return self._tap

    @tap.setter
    def tap(self, value: str) -> None:
        valid = ["laser", *self.testbed.config.client_names]
        if value not in valid:
            raise ValueError(f"tap must be one of {valid}, got {value!r}")
        with self.lock:
            self._tap = value

    def place_at(self, position: str) -> None:
        """Switch the simulated head to a calibration tap (see :attr:`tap`)."""
        self.tap = position

    def true_power_w(self) -> float:
        """Noise-free power at the current tap [W] (simulator truth)."""
        return self.testbed.tap_power_w(self._tap, self._tap_ratio)

    def power_w(self) -> float:
        with self.lock:
            p = self.true_power_w()
            sd = math.hypot(self._noise_rel * p, self._noise_floor) / math.sqrt(self._averaging)
            return float(p + sd * self._rng.standard_normal())


def create_simulated_instruments(config: StationConfig, testbed: SagnacTestbed | None = None) -> dict[str, Instrument]:
    """Every role with ``driver == "sim"``, keyed by role name, all sharing one testbed.

    The testbed is also reachable as ``instrument.testbed`` on each of them.
    """
    tb = testbed if testbed is not None else SagnacTestbed(config)
    out: dict[str, Instrument] = {}
    for role, ic in config.roles().items():
        if not ic.simulated:
            continue
        inst: Instrument
        if role == "laser":
            inst = SimulatedLaser(role, tb)
        elif role.endswith(".phase_modulator"):
            inst = SimulatedPhaseModulator(role, tb, role.split(".")[0])
        elif role.endswith(".attenuator"):
            client = role.split(".")[0]
            inst = SimulatedAttenuator(role, tb, client, config.client(client).attenuator.max_attenuation_db)
        elif role in ("D0", "D1"):
            inst = SimulatedDetector(role, tb)
        elif role == "time_tagger":
            inst = SimulatedTimeTagger(role, tb)
        elif role == "power_meter":
            inst = SimulatedPowerMeter(role, tb, config.power_meter.options)
        else:  # pragma: no cover - roles() lists only the kinds above
            raise ValueError(f"no simulated instrument for role {role!r}")
        out[role] = inst
    return out
