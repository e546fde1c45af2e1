"""Simulated instruments: every interface of :mod:`labqfl.instruments.interfaces`, backed by one
shared :class:`~labqfl.sim_backends.testbed.SagnacTestbed`.

Each setting is the interface's own :class:`~labqfl.instruments.settings.Setting` (same rule,
same range, same :class:`SettingError` as on hardware), kept here in the testbed's live state
(:func:`_in_testbed`) under the instrument's and the testbed's locks; the physics reads that state at the
start of every block: laser off → no photon clicks; detector disabled → no clicks on it;
attenuator → that client's intensities; phase-modulator Vπ / bias settings → the applied phases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
from labqfl.sim_backends.testbed import SagnacTestbed

from labqfl.config import StationConfig
from labqfl.contracts.types import MAX_DURATION_S
from labqfl.instruments.base import Instrument, TagBlock
from labqfl.instruments.interfaces import (
    PhaseModulator,
    PhotonDetector,
    PowerMeter,
    PulsedLaser,
    TimeTagger,
    VariableAttenuator,
)
from labqfl.instruments.settings import Setting, one_of

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


def _in_testbed(setting: Setting[Any], attr: str) -> Setting[Any]:
    """The interface's ``setting`` (its rule unchanged), kept in the testbed's live state under
    ``attr``: validated by the descriptor, then stored under the instrument's and the testbed's
    locks and the testbed told (:meth:`_SimMixin._set`)."""
    return setting.refine(fget=lambda s: getattr(s._live(), attr),
                          fset=lambda s, v: s._set(attr, v), get_command=None, set_command=None, store=None)


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

    def _set_output_enabled(self, on: bool) -> None:
        self.log.info("output %s", "on" if on else "off")
        self._set("laser_on", on)

    def _get_output_enabled(self) -> bool:
        return bool(self.testbed.live.laser_on)

    output_enabled = PulsedLaser.output_enabled.via(_get_output_enabled, _set_output_enabled)

    rep_rate_hz = _in_testbed(PulsedLaser.rep_rate_hz, "rep_rate_hz")
    power_mw = _in_testbed(PulsedLaser.power_mw, "power_mw")
    wavelength_nm = _in_testbed(PulsedLaser.wavelength_nm, "wavelength_nm")

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

    output_enabled = _in_testbed(PhaseModulator.output_enabled, "pm_enabled")
    v_pi_v = _in_testbed(PhaseModulator.v_pi_v, "v_pi_set")
    bias_phase_rad = _in_testbed(PhaseModulator.bias_phase_rad, "bias_set")
    gate_delay_ps = _in_testbed(PhaseModulator.gate_delay_ps, "gate_delay_set_ps")
    amplitude_vpp = _in_testbed(PhaseModulator.amplitude_vpp, "amplitude_vpp")

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

    attenuation_db = _in_testbed(VariableAttenuator.attenuation_db, "attenuation_db")
    shutter_closed = _in_testbed(VariableAttenuator.shutter_closed, "shutter_closed")
    wavelength_nm = VariableAttenuator.wavelength_nm.kept_in("_wavelength")


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

    enabled = _in_testbed(PhotonDetector.enabled, "enabled")
    efficiency = _in_testbed(PhotonDetector.efficiency, "efficiency")
    bias = _in_testbed(PhotonDetector.bias, "bias")
    dead_time_ns = _in_testbed(PhotonDetector.dead_time_ns, "dead_time_ns")
    gated = _in_testbed(PhotonDetector.gated, "gated")
    gate_width_ns = _in_testbed(PhotonDetector.gate_width_ns, "gate_width_ns")
    gate_delay_ps = _in_testbed(PhotonDetector.gate_delay_ps, "gate_delay_ps")
    temperature_k = PhotonDetector.temperature_k.kept_in("_temperature")

    @property
    def max_bias(self) -> float:  # type: ignore[override]
        """Bias range of the simulated detector: 30 µA (SNSPD) or 10 V (SPAD)."""
        return 30.0 if self._kind == "snspd" else 10.0

    @property
    def bias_unit(self) -> str:  # type: ignore[override]
        return "µA" if self._kind == "snspd" else "V"

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
                                     *tt.marker_inputs().values()})

    def input_channels(self) -> list[int]:
        return list(self._all_channels)

    def setting_channels(self) -> list[int]:
        """Every channel of the station's tagger (enabled or not) takes a trigger level and a delay."""
        return list(self._all_channels)

    def _get_channels(self) -> list[int]:
        return sorted(self.testbed.live.enabled_channels)

    def _set_channels(self, chans: list[int]) -> None:
        with self.lock, self.testbed.lock:
            self.testbed.live.enabled_channels = set(chans)
            self.testbed.touch()

    channels = TimeTagger.channels.via(_get_channels, _set_channels)

    def _get_trigger_levels_v(self) -> dict[int, float]:
        return dict(self.testbed.live.trigger_levels_v)

    def _set_trigger_levels_v(self, new: dict[int, float]) -> None:
        with self.lock, self.testbed.lock:
            self.testbed.live.trigger_levels_v.update(new)
            self.testbed.touch()

    trigger_levels_v = TimeTagger.trigger_levels_v.via(_get_trigger_levels_v, _set_trigger_levels_v)

    def _get_input_delays_ps(self) -> dict[int, int]:
        return {ch: self.testbed.live.input_delays_ps.get(ch, 0) for ch in self._all_channels}

    def _set_input_delays_ps(self, new: dict[int, int]) -> None:
        with self.lock, self.testbed.lock:
            self.testbed.live.input_delays_ps.update(new)
            self.testbed.touch()

    input_delays_ps = TimeTagger.input_delays_ps.via(_get_input_delays_ps, _set_input_delays_ps)

    @TimeTagger.resolution_ps.getter
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

    def stream(self, duration_s: float, block_duration_s: float | None = None,
               on_recording: Callable[[], None] | None = None) -> Iterator[TagBlock]:
        d = _check_range("duration_s", duration_s, 0.0, MAX_DURATION_S, "s", lo_open=True)
        if block_duration_s is not None:
            _check_range("block_duration_s", block_duration_s, 0.0, MAX_DURATION_S, "s", lo_open=True)
        with self.lock:
            blocks = self.testbed.stream(d, block_duration_s)
        if on_recording is not None:  # the simulated loop's time starts with the stream (slot 0 at t = 0)
            on_recording()
        return blocks

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

    wavelength_nm = PowerMeter.wavelength_nm.kept_in("_wavelength")
    averaging = PowerMeter.averaging.kept_in("_averaging")
    tap: Setting[str] = Setting("", "which calibration tap the head sits on", store="_tap",
                                validator=one_of(lambda s: ["laser", *s.testbed.config.client_names]))

    def place_at(self, position: str, confirm: Callable[[str], bool] | None = None) -> None:
        """Switch the simulated head to a calibration tap (see :attr:`tap`); no operator, no ``confirm``."""
        self.tap = position

    def true_power_w(self) -> float:
        """Noise-free power at the current tap [W] (simulator truth)."""
        return self.testbed.tap_power_w(self._tap, self._tap_ratio)

    def power_w(self) -> float:
        with self.lock:
            p = self.true_power_w()
            sd = math.hypot(self._noise_rel * p, self._noise_floor) / math.sqrt(self._averaging)
            return float(p + sd * self._rng.standard_normal())


def driver_follower(testbed: SagnacTestbed, role: str) -> Callable[[Instrument, str], None] | None:
    """A change hook (:meth:`Instrument.add_change_hook`) that makes ``testbed``'s loop follow the real driver
    of ``role``, for the roles the loop models; None for the others. After every setting the driver writes,
    the hook reads the instrument's state back through the driver (its queries: what the instrument holds,
    a pyvisa-sim device included, which only stores it) and hands it to the loop:

    * ``laser``: output on/off and average power (:meth:`SagnacTestbed.follow_laser`);
    * ``<client>.phase_modulator`` on the driver ``GenericBitDrivenPhaseModulator``: the RF amplifier's
      output and gain and the DC bias port (:meth:`SagnacTestbed.follow_bit_modulator`).

    Only instrument state flows this way; a client's choices reach the loop only through what its pattern
    generator plays. The Station connects it when it opens a real driver next to a simulated loop.

    Only a driver whose instrument is a pyvisa-sim device (``visa_library = "@sim…"``) is followed: that device
    *is* the simulated instrument, so its state is the loop's physics. An instrument on any other backend is a
    real unit (or a bench emulator of one) whose light is not this loop's; reading it back after every write
    would also send it commands that a node process, which holds no loop, never sends
    (tests/nodes/test_node_instruments.py compares the two)."""
    cfg = testbed.config
    ic = cfg.roles().get(role)
    if ic is None or not str(ic.visa_library or "").startswith("@sim"):
        return None
    if role == "laser":
        def follow_laser(inst: Instrument, setting: str) -> None:
            laser = cast(PulsedLaser, inst)
            testbed.follow_laser(bool(laser.output_enabled), float(laser.power_mw))
        return follow_laser
    client = role.removesuffix(".phase_modulator")
    if role.endswith(".phase_modulator") and client in cfg.client_names \
            and cfg.client(client).phase_modulator.driver == "GenericBitDrivenPhaseModulator":
        def follow_modulator(inst: Instrument, setting: str) -> None:
            pm: Any = inst
            testbed.follow_bit_modulator(client, output_enabled=bool(pm.output_enabled),
                                         gain_db=float(pm.rf_gain_db), dc_volts=float(pm.dc_voltage()))
        return follow_modulator
    return None


def create_simulated_instruments(config: StationConfig, testbed: SagnacTestbed | None = None) -> dict[str, Instrument]:
    """Every role with ``driver == "sim"``, keyed by role name, all sharing one testbed; with
    ``simulation.emulate_time_tagger`` also the simulated tagger behind the emulated real one (role
    ``time_tagger``: the light its emulated SDK records, :mod:`labqfl.sim_backends.timetagger_sdk`).

    The testbed is also reachable as ``instrument.testbed`` on each of them.
    """
    tb = testbed if testbed is not None else SagnacTestbed(config)
    out: dict[str, Instrument] = {}
    for role, ic in config.roles().items():
        if not ic.simulated and not (role == "time_tagger" and config.simulation.emulate_time_tagger):
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
