"""Keysight (Agilent) 33500B-series waveform generator driving a client's phase modulator.

Wraps PyMeasure's :class:`pymeasure.instruments.agilent.Agilent33500` (channel ``options.channel``,
1 or 2, default 1; the options are typed, see :class:`Keysight33500BOptions`). The phase pattern is played as an arbitrary waveform, one sample per laser
pulse: the sample rate is ``options.sample_rate_hz`` (default: the laser repetition rate the
pattern is clocked at, 100 MSa/s; at most 250 MSa/s) and each external trigger (the frame sync,
``TRIG<ch>:SOUR EXT``) plays the pattern once (triggered burst of one cycle).

Drive voltage for phase index a: V = wrap(a·π/2 − bias_phase) · Vπ/π with the phase wrapped into
[−π, π) (equivalent modulo 2π to :meth:`PhaseModulator.drive_voltage`, and it keeps the drive within
±Vπ). Vπ and the bias phase are properties of the modulator, kept
by this driver and used when a pattern is loaded; ``gate_delay_ps`` is the generator's trigger
delay ``TRIG<ch>:DEL`` [s on the wire]; the output window is ±5 V into 50 Ω.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field
from pymeasure.adapters import Adapter
from pymeasure.instruments.agilent import Agilent33500

from labqfl.config import DriverOptions, InstrumentConfig, StationConfig
from labqfl.errors import InstrumentReplyError
from labqfl.instruments.interfaces import PHASE_ALPHABET_RAD, PhaseModulator

from ._base import Limit, MessageDriver, check_range

AMPLITUDE_VPP = (0.01, 10.0)
MAX_ABS_V = 5.0
V_PI_V = (0.1, 20.0)
BIAS_PHASE_RAD = (-2 * math.pi, 2 * math.pi)
GATE_DELAY_PS = (0.0, 1e12)  # 0 … 1 s
SAMPLE_RATE_HZ = (1.0, 250e6)
PATTERN_POINTS = (8, 65536)
ARB_NAME = "LABQFL"


class Keysight33500BOptions(DriverOptions):
    """``options`` of a :class:`Keysight33500B` role."""

    channel: Literal[1, 2] = Field(1, description="output channel driving this role's modulator")
    sample_rate_hz: float = Field(100e6, ge=SAMPLE_RATE_HZ[0], le=SAMPLE_RATE_HZ[1],
                                  description="arbitrary-waveform sample rate = slot rate [Sa/s]")


class Keysight33500B(MessageDriver, PhaseModulator):
    """A 33500B channel as a :class:`PhaseModulator` (PyMeasure ``Agilent33500`` underneath)."""

    Options = Keysight33500BOptions
    CHANNELS = (1, 2)  # two roles (two clients' modulators) may share one two-channel generator

    @classmethod
    def config_limits(cls, options: Any) -> dict[str, Limit]:
        return {name: getattr(cls, name).limits() for name in ("v_pi_v", "bias_phase_rad", "gate_delay_ps")}

    def __init__(self, name: str, config: InstrumentConfig, *, adapter: Adapter | None = None) -> None:
        opts = self.parse_options(name, config)
        self.channel = opts.channel
        self.sample_rate_hz = opts.sample_rate_hz
        self.name = name  # for the setting's error before the session opens
        self._v_pi = Keysight33500B.v_pi_v.validate(self, getattr(config, "v_pi_v", 4.0))
        self._bias = float(getattr(config, "bias_phase_rad", 0.0))
        self.pattern_length = 0
        super().__init__(name, config, adapter=adapter)

    def _on_open(self) -> None:
        assert self.link.adapter is not None
        self.pm = Agilent33500(self.link.adapter)
        self.ch = self.pm.ch_1 if self.channel == 1 else self.pm.ch_2
        ident = self.link.call("*IDN?", lambda: str(self.pm.id)).strip()
        if not ident:
            raise InstrumentReplyError("empty reply", instrument=self.name, resource=self.resource, command="*IDN?")
        self.link.heard = True
        self._identity = ident

    def apply_operating_point(self, station: StationConfig) -> None:
        """Trigger delay ``gate_delay_ps`` of the role; output off until a pattern plays (Vπ and bias
        phase are kept by the driver from the same config)."""
        with self.lock:
            self.gate_delay_ps = float(getattr(self.config, "gate_delay_ps", 0.0))
            self.output_enabled = False

    # -- helpers --------------------------------------------------------------------------------
    def _set(self, label: str, fn: Any) -> None:
        with self.lock:
            self.link.call(label, fn)
            self.link.check_errors(label)

    # -- settings (rules: PhaseModulator's, ranges: this generator's) ---------------------------------
    def _get_output_enabled(self) -> bool:
        return bool(self.link.call(f"OUTP{self.channel}?", lambda: self.ch.output))

    def _set_output_enabled(self, v: bool) -> None:
        self._set(f"OUTP{self.channel} {int(v)}", lambda: setattr(self.ch, "output", v))

    output_enabled = PhaseModulator.output_enabled.via(_get_output_enabled, _set_output_enabled)

    def _get_amplitude_vpp(self) -> float:
        return float(self.link.call(f"SOUR{self.channel}:VOLT?", lambda: self.ch.amplitude))

    def _set_amplitude_vpp(self, v: float) -> None:
        self._set(f"SOUR{self.channel}:VOLT", lambda: setattr(self.ch, "amplitude", v))

    amplitude_vpp = PhaseModulator.amplitude_vpp.within(*AMPLITUDE_VPP).via(
        _get_amplitude_vpp, _set_amplitude_vpp)

    # kept by the driver, used when a pattern is loaded
    v_pi_v = PhaseModulator.v_pi_v.within(*V_PI_V).kept_in("_v_pi")
    bias_phase_rad = PhaseModulator.bias_phase_rad.within(*BIAS_PHASE_RAD).kept_in("_bias")
    gate_delay_ps = PhaseModulator.gate_delay_ps.within(*GATE_DELAY_PS).scpi(
        "TRIG{channel}:DEL?", "TRIG{channel}:DEL {value:.6e}", get_process=lambda s: s * 1e12,
        set_process=lambda ps: ps * 1e-12)

    # -- waveforms ------------------------------------------------------------------------------
    def pattern_levels(self, phase_indices: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Normalised samples in [-1, 1], amplitude [Vpp] and offset [V] realising the pattern."""
        idx = np.asarray(phase_indices)
        if idx.ndim != 1 or not PATTERN_POINTS[0] <= idx.size <= PATTERN_POINTS[1]:
            raise ValueError(f"phase pattern must be 1-D with {PATTERN_POINTS[0]} to {PATTERN_POINTS[1]} slots, got shape {idx.shape}")
        if not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() > 3:
            raise ValueError("phase pattern must hold integer phase indices 0..3 (phase a·π/2)")
        # phases are equivalent modulo 2π: wrap into [-π, π) to keep the drive inside ±Vπ
        phase = np.mod(PHASE_ALPHABET_RAD[idx.astype(np.intp)] - self._bias + math.pi, 2 * math.pi) - math.pi
        volts = phase * self._v_pi / math.pi
        vmax, vmin = float(volts.max()), float(volts.min())
        vpp = max(vmax - vmin, AMPLITUDE_VPP[0])
        offset = (vmax + vmin) / 2
        if abs(offset) + vpp / 2 > MAX_ABS_V + 1e-9:
            raise ValueError(f"pattern needs {vmin:.3f} V to {vmax:.3f} V, beyond the ±{MAX_ABS_V:g} V output window; "
                             f"check v_pi_v ({self._v_pi:g} V) and bias_phase_rad")
        samples = np.clip((volts - offset) / (vpp / 2), -1.0, 1.0)
        return samples, vpp, offset

    def load_pattern(self, phase_indices: np.ndarray) -> None:
        """Upload the per-slot phase pattern and play it once per external trigger."""
        samples, vpp, offset = self.pattern_levels(phase_indices)
        points = [f"{s:.4f}" for s in samples]
        ch = self.ch
        with self.lock:
            self._set(f"SOUR{self.channel}:DATA:VOL:CLE", ch.data_volatile_clear)
            self._set(f"SOUR{self.channel}:DATA:ARB {ARB_NAME}, <{len(points)} points>",
                      lambda: ch.data_arb(ARB_NAME, points, data_format="float"))
            self._set(f"SOUR{self.channel}:FUNC ARB", lambda: setattr(ch, "shape", "ARB"))
            self._set(f"SOUR{self.channel}:FUNC:ARB {ARB_NAME}", lambda: setattr(ch, "arb_file", ARB_NAME))
            self._set(f"SOUR{self.channel}:FUNC:ARB:SRAT", lambda: setattr(ch, "arb_srate", self.sample_rate_hz))
            self._set(f"SOUR{self.channel}:VOLT", lambda: setattr(ch, "amplitude", vpp))
            self._set(f"SOUR{self.channel}:VOLT:OFFS", lambda: setattr(ch, "offset", offset))
            self._set(f"SOUR{self.channel}:BURS:NCYC 1", lambda: setattr(ch, "burst_ncycles", 1))
            self._set(f"SOUR{self.channel}:BURS:STAT 1", lambda: setattr(ch, "burst_state", True))
            self.link.write(f"TRIG{self.channel}:SOUR EXT")
            self.pattern_length = len(points)

    def set_dc_voltage(self, volts: float) -> None:
        """Constant drive voltage [V] (Vπ fringe scan): DC function at offset ``volts``."""
        v = check_range("volts", volts, -4.995, 4.995, "V")
        with self.lock:
            self._set(f"SOUR{self.channel}:FUNC DC", lambda: setattr(self.ch, "shape", "DC"))
            self._set(f"SOUR{self.channel}:VOLT:OFFS", lambda: setattr(self.ch, "offset", v))

    def status(self) -> dict[str, Any]:
        st = super().status()
        st.update(channel=self.channel, output_enabled=self.output_enabled, pattern_length=self.pattern_length)
        return st

