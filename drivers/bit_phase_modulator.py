"""A client's phase modulator driven by the pattern generator's two phase bits through a binary-weighted
combiner and an RF amplifier — a **protocol-level driver that names no model**.

**The chain.** The client's pattern generator plays each slot's phase index ``a`` (0..3) as two digital
outputs, bit 0 = ``a & 1`` and bit 1 = ``a >> 1`` (:class:`~labqfl.drivers.swabian_pulsestreamer.SwabianPulseStreamer`,
``options.phase_channels``). A resistive combiner (with attenuators) turns them into the level
``u_a = b0·w0 + b1·w1`` (``options.bit_levels_v`` = ``[w0, w1]``, the combiner's output per bit [V]), an RF
amplifier of voltage gain ``G = 10^(g/20)`` (``rf_gain_db`` = g) drives the modulator with ``V_a = G·u_a``,
and the modulator applies the phase ``φ_a = π·V_a/Vπ + φ0`` (the linear electro-optic phase of a LiNbO3
phase modulator, e.g. Saleh & Teich, *Fundamentals of Photonics*, §20.1; ``φ0`` = ``bias_phase_rad``).
Four-phase encoding (φ_a = a·π/2, :data:`~labqfl.instruments.interfaces.PHASE_ALPHABET_RAD`) needs
``G·w0 = Vπ/2`` and ``w1 = 2·w0``: :meth:`ideal_gain_db` gives that gain, written on open unless
``options.rf_gain_db`` fixes another one; :meth:`phases_rad` and :meth:`phase_errors_rad` show what a
given gain, combiner and Vπ give. The same formula drives the simulated loop for a client whose
``phase_modulator`` role uses this driver (``labqfl.sim_backends.testbed``, checked by the tests); in process
the loop follows this driver's live output, gain and DC bias through the Station's change hook
(:meth:`~labqfl.instruments.base.Instrument.add_change_hook`; DC port assumed to share the RF path's Vπ).

**Why protocol-level.** The remote-controlled parts of this chain — the amplifier's gain and output and
the modulator's DC bias port — come as separate boxes in every lab; no single unit with a published
command set covers them. This driver speaks a small SCPI command set of its own, served by the pyvisa-sim
device ``labqfl/sim_backends/visa/bit_phase_modulator.yaml``; for a real amplifier/bias box write its
``{Vendor}{Model}`` driver with these functions, or put an adapter in front of it. Nothing below is claimed
to match a commercial unit::

    *IDN?                  identity
    OUTP 1|0               RF amplifier output on/off            OUTP? → 1/0
    GAIN <dB>              amplifier gain [dB], 0 … 40           GAIN? → dB
    BIAS:VOLT <V>          DC bias port voltage [V], ±20 V        BIAS:VOLT? → V
    SYST:ERR?              error queue, <code>,"<message>"

``set_dc_voltage`` writes the DC bias port, whose voltage adds to every code's drive (it holds no phase of
its own while the pattern generator plays: the Vπ fringe is scanned through the generator by the gain,
``labqfl.calibration.pg_fringe``); ``amplitude_vpp`` is the
largest drive, ``G·(w0 + w1)``, and writing it sets the gain; ``gate_delay_ps`` is kept for snapshots only
(the slot timing is the pattern generator's and the cables'). The per-slot pattern does not pass through
this driver: :meth:`load_pattern` refuses with that explanation. Safe state: amplifier output off.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field, field_validator
from pymeasure.adapters import Adapter

from labqfl.config import DriverOptions, InstrumentConfig, StationConfig
from labqfl.errors import InstrumentError
from labqfl.instruments.interfaces import PhaseModulator
from labqfl.instruments.settings import Setting, in_range

from ._base import IdentityPattern, Limit, MessageDriver, check_range

GAIN_DB = (0.0, 40.0)
V_PI_V = (0.5, 20.0)
DC_V = 20.0
AMPLITUDE_VPP = (0.01, 40.0)
BIAS_PHASE_RAD = (-2 * math.pi, 2 * math.pi)
#: default combiner output per phase bit [V] (LSB first): binary-weighted
DEFAULT_BIT_LEVELS_V = (0.25, 0.5)


def bit_drive_levels_v(bit_levels_v: tuple[float, ...] | list[float], gain_db: float) -> list[float]:
    """Drive voltage V_a = 10^(g/20)·(b0·w0 + b1·w1) for phase codes a = 0..3 (b0 = a & 1, b1 = a >> 1)."""
    g = 10.0 ** (gain_db / 20.0)
    w0, w1 = float(bit_levels_v[0]), float(bit_levels_v[1])
    return [g * ((a & 1) * w0 + (a >> 1) * w1) for a in range(4)]


class GenericBitDrivenPhaseModulatorOptions(DriverOptions):
    """``options`` of a :class:`GenericBitDrivenPhaseModulator` role."""

    bit_levels_v: list[float] = Field(default_factory=lambda: list(DEFAULT_BIT_LEVELS_V), min_length=2, max_length=2,
                                      description="combiner output per phase bit, LSB first [V] (binary-weighted: w1 = 2·w0)")
    rf_gain_db: float | None = Field(None, ge=GAIN_DB[0], le=GAIN_DB[1],
                                     description="RF amplifier gain written on open [dB] (default: the ideal gain, "
                                                 "G·w0 = Vπ/2)")
    #: this driver names no model: set it to your box's *IDN? so that a wrong address is refused on open
    identity_pattern: IdentityPattern = None

    @field_validator("bit_levels_v")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(not 0 < x <= 5.0 for x in v):
            raise ValueError(f"bit levels must lie in (0, 5] V, got {v}")
        return v


class GenericBitDrivenPhaseModulator(MessageDriver, PhaseModulator):
    """A phase modulator fed by the pattern generator's phase bits (module docstring)."""

    Options = GenericBitDrivenPhaseModulatorOptions

    @classmethod
    def config_limits(cls, options: Any) -> dict[str, Limit]:
        return {name: getattr(cls, name).limits() for name in ("v_pi_v", "bias_phase_rad")}

    def __init__(self, name: str, config: InstrumentConfig, *, adapter: Adapter | None = None) -> None:
        o: GenericBitDrivenPhaseModulatorOptions = self.parse_options(name, config)
        self.bit_levels_v = tuple(float(x) for x in o.bit_levels_v)
        self.name = name
        self._v_pi = GenericBitDrivenPhaseModulator.v_pi_v.validate(self, getattr(config, "v_pi_v", 4.0))
        self._bias = GenericBitDrivenPhaseModulator.bias_phase_rad.validate(
            self, float(getattr(config, "bias_phase_rad", 0.0)))
        self._gate_delay = float(getattr(config, "gate_delay_ps", 0.0))
        super().__init__(name, config, adapter=adapter)

    output_enabled = PhaseModulator.output_enabled.refine(doc="RF amplifier output on/off").scpi(
        "OUTP?", "OUTP {value}", cast=bool, set_process=int)
    v_pi_v = PhaseModulator.v_pi_v.within(*V_PI_V).kept_in("_v_pi")
    bias_phase_rad = PhaseModulator.bias_phase_rad.within(*BIAS_PHASE_RAD).kept_in("_bias")
    gate_delay_ps = PhaseModulator.gate_delay_ps.refine(
        doc="kept for snapshots: the slot timing is the pattern generator's").kept_in("_gate_delay")
    rf_gain_db: Setting[float] = Setting("dB", "RF amplifier gain", validator=in_range(*GAIN_DB, "dB"),
                                         get_command="GAIN?", set_command="GAIN {value:.2f}")

    def _get_amplitude_vpp(self) -> float:
        return 10.0 ** (self.rf_gain_db / 20.0) * sum(self.bit_levels_v)

    def _set_amplitude_vpp(self, vpp: float) -> None:
        self.rf_gain_db = round(20.0 * math.log10(vpp / sum(self.bit_levels_v)), 2)

    amplitude_vpp = PhaseModulator.amplitude_vpp.within(*AMPLITUDE_VPP).refine(
        doc="largest drive G·(w0 + w1) (writing it sets the amplifier gain)").via(_get_amplitude_vpp, _set_amplitude_vpp)

    # -- the chain --------------------------------------------------------------------------------------
    def ideal_gain_db(self, v_pi_v: float | None = None) -> float:
        """Gain [dB] with G·w0 = Vπ/2 (phase code 1 → π/2; binary-weighted bits then give a·π/2)."""
        v_pi = self.v_pi_v if v_pi_v is None else float(v_pi_v)
        return 20.0 * math.log10(v_pi / (2.0 * self.bit_levels_v[0]))

    def drive_levels_v(self, gain_db: float | None = None) -> list[float]:
        """Drive voltage per phase code 0..3 at the amplifier's gain (or ``gain_db``)."""
        return bit_drive_levels_v(self.bit_levels_v, self.rf_gain_db if gain_db is None else gain_db)

    def phases_rad(self, gain_db: float | None = None) -> list[float]:
        """Phase applied per phase code 0..3: π·V_a/Vπ + bias phase."""
        return [math.pi * v / self.v_pi_v + self.bias_phase_rad for v in self.drive_levels_v(gain_db)]

    def phase_errors_rad(self, gain_db: float | None = None) -> list[float]:
        """Applied minus intended phase (a·π/2 + bias phase) per phase code [rad]."""
        return [p - (a * math.pi / 2 + self.bias_phase_rad) for a, p in enumerate(self.phases_rad(gain_db))]

    def load_pattern(self, phase_indices: np.ndarray) -> None:
        raise InstrumentError("this phase modulator takes its per-slot phases from the client's pattern generator "
                              "(role '<client>.pattern_generator', streamed by labqfl.modulation.ModulationStreamer), "
                              "not from a pattern loaded here", instrument=self.name, resource=self.resource,
                              command="load_pattern")

    def set_dc_voltage(self, volts: float) -> None:
        """DC bias port voltage [V], ±20 V: adds π·V/Vπ to the phase of every code."""
        v = check_range("dc voltage", volts, -DC_V, DC_V, "V")
        with self.lock:
            self.link.write(f"BIAS:VOLT {v:.4f}")
        self.setting_changed("dc_voltage")  # change hooks: an emulated station's loop follows the DC port

    def dc_voltage(self) -> float:
        """DC bias port voltage now set [V]."""
        return self.link.query_float("BIAS:VOLT?")

    def apply_operating_point(self, station: StationConfig) -> None:
        """Vπ and bias phase of the client's ``phase_modulator`` config, the amplifier gain
        (``options.rf_gain_db``, else :meth:`ideal_gain_db`), DC bias 0 V, amplifier output off."""
        client = self.name.split(".")[0]
        with self.lock:
            if client in station.client_names:
                pm = station.client(client).phase_modulator
                self.v_pi_v, self.bias_phase_rad = pm.v_pi_v, pm.bias_phase_rad
            gain = self.opts.rf_gain_db if self.opts.rf_gain_db is not None else self.ideal_gain_db()
            self.rf_gain_db = round(gain, 2)
            self.set_dc_voltage(0.0)
            self.output_enabled = False

    def status(self) -> dict[str, Any]:
        st = super().status()
        st.update(output_enabled=self.output_enabled, rf_gain_db=self.rf_gain_db,
                  phase_errors_rad=[round(e, 4) for e in self.phase_errors_rad()])
        return st
