"""Keysight (Agilent) 33500B-series waveform generator on a client's phase modulator: a **fixed
waveform** source (the DC bias / Vπ fringe scan, or one pattern replayed per trigger), not a per-slot
random pattern source.

Wraps PyMeasure's :class:`pymeasure.instruments.agilent.Agilent33500` (channel ``options.channel``,
1 or 2, default 1; the options are typed, see :class:`Keysight33500BOptions`).

**Why it cannot carry the client's randomness.** The 33500B plays an arbitrary waveform from its
memory (8 to 1,000,000 points standard; 16,000,000 with the memory option) at up to 250 MSa/s and has
no streaming: each trigger replays the same samples. At 100 MHz the whole standard memory is 10 ms of
slots, replayed on every frame trigger — the same choices and so the same raw key. A client whose
phase modulator is this driver therefore needs a ``pattern_generator`` role that plays the per-slot
levels (e.g. ``SwabianPulseStreamer``); the station file is refused otherwise when the time tagger is
real (``labqfl.config.parse_station_config``). With a simulated time tagger the simulated loop takes the
client's choices directly and this driver only exercises the protocol.

**What it writes** (Keysight *33500B/33600A Series Trueform Waveform Generators — Operating and Service
Guide*, SCPI Programming Reference chapter; its online help at
rfmw.em.keysight.com/spdhelpfiles/33500/webhelp, "Waveform Generation Tutorial — Arbitrary Waveforms /
Waveform Filters" for the 8 … 1,000,000-point range and the filters: the Normal filter rolls off
(−3 dB) at 27 % of the sample rate and so smears 10 ns slots into each other; Step and Off keep each
sample flat for its whole period). The subsystem names below are the guide's; the section numbers
could not be checked here:

* on open — ``FORMat:BORDer SWAPped`` (FORMat subsystem: binary blocks least-significant byte first,
  as PCs store int16) and ``SOUR<ch>:FUNCtion:ARBitrary:FILTer STEP`` (FUNCtion subsystem;
  ``options.arb_filter`` = ``"STEP"`` or ``"OFF"``, never NORMal);
* operating point — ``ROSCillator:SOURce EXTernal|INTernal`` (ROSCillator subsystem) from
  ``[sync] pattern_generator_reference`` (the modulation path locks to the station's shared 10 MHz
  reference, as the pattern generators do), the trigger delay ``TRIG<ch>:DELay``, output off, and the
  output load ``OUTPut<ch>:LOAD 50`` read back with ``OUTPut<ch>:LOAD?`` (the guide's "Output
  Termination": 1 Ω … 10 kΩ or INFinity, default 50 Ω, the query answering 9.9E+37 for INFinity; the
  drive voltages below are volts into the modulator's 50 Ω input, which a channel left at High-Z would
  halve);
* pattern — ``SOUR<ch>:DATA:ARBitrary:DAC <name>, #<n><bytes><int16 …>`` (DATA subsystem: an IEEE 488.2
  definite-length binary block of DAC codes −32767 … +32767 = −1 … +1 of the amplitude), then
  ``FUNC ARB``, ``FUNC:ARB <name>``, ``FUNC:ARB:SRAT``, amplitude/offset, a triggered burst of one cycle
  on ``TRIG<ch>:SOUR EXT``. PyMeasure's ``data_arb`` offers only ASCII lists (its docstring: at most
  65,536 points), so the block is written through the adapter's ``write_binary_values``.

Filter and sample rate: with ``arb_filter = "OFF"`` the options refuse ``sample_rate_hz`` above
62.5 MSa/s. That limit is inferred from Keysight's 33500/33600 online help, RATE subsystem
(rfmw.em.keysight.com/spdhelpfiles/33500/webhelp-mobile/JP/Advanced/Content/__I_SCPI/RATE_Subsystem.htm:
NORMal/STEP up to 250 MSa/s on the 33500 Series, OFF up to 62.5 MSa/s; 250 MSa/s on the 33600), not
checked against the printed guide.

Memory: ``options.max_points`` is the points limit the driver enforces — 1,000,000 (standard, the
guide's tutorial) by default; 16,000,000 for a unit with the memory option (option MEM, Keysight data
sheet; not checked against the manual text here). Set it to what ``*OPT?`` of the unit reports.

Drive voltage for phase index a: V = wrap(a·π/2 − bias_phase) · Vπ/π with the phase wrapped into
[−π, π) (equivalent modulo 2π to :meth:`PhaseModulator.drive_voltage`, and it keeps the drive within
±Vπ). Vπ and the bias phase are properties of the modulator, kept by this driver and used when a
pattern is loaded; ``gate_delay_ps`` is the generator's trigger delay ``TRIG<ch>:DEL`` [s on the wire];
the output window is ±5 V into 50 Ω.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator
from pymeasure.adapters import Adapter
from pymeasure.instruments.agilent import Agilent33500

from labqfl.config import DriverOptions, InstrumentConfig, StationConfig
from labqfl.errors import InstrumentReplyError
from labqfl.instruments.interfaces import PHASE_ALPHABET_RAD, PhaseModulator

from ._base import Identity, Limit, MessageDriver, check_range

AMPLITUDE_VPP = (0.01, 10.0)
MAX_ABS_V = 5.0
V_PI_V = (0.1, 20.0)
BIAS_PHASE_RAD = (-2 * math.pi, 2 * math.pi)
GATE_DELAY_PS = (0.0, 1e12)  # 0 … 1 s
SAMPLE_RATE_HZ = (1.0, 250e6)
ARB_FILTER_OFF_MAX_HZ = 62.5e6  # with FUNC:ARB:FILT OFF (33500 Series; Keysight help, RATE subsystem)
MIN_POINTS = 8  # the guide's minimum arbitrary waveform (33500 Series)
STANDARD_POINTS: Literal[1_000_000] = 1_000_000  # standard memory per waveform (the guide's tutorial)
OPTION_MEM_POINTS = 16_000_000  # with the memory option (data sheet; not checked here)
DAC_FULL_SCALE = 32767  # DATA:ARB:DAC codes -32767 … +32767
#: The load the drive levels assume: the modulator's 50 Ω RF input. ``OUTPut[1|2]:LOAD`` tells the generator
#: that load (guide, "Output Termination": 1 Ω … 10 kΩ or INFinity, default 50 Ω; the query answers the value
#: or 9.9E+37 for INFinity); a channel left at INF drives a 50 Ω modulator with half the programmed voltage.
LOAD_OHM = 50.0
ARB_NAME = "LABQFL"


class Keysight33500BOptions(DriverOptions):
    """``options`` of a :class:`Keysight33500B` role."""

    channel: Literal[1, 2] = Field(1, description="output channel driving this role's modulator")
    sample_rate_hz: float = Field(100e6, ge=SAMPLE_RATE_HZ[0], le=SAMPLE_RATE_HZ[1],
                                  description="arbitrary-waveform sample rate = slot rate [Sa/s]")
    max_points: Literal[1_000_000, 16_000_000] = Field(
        STANDARD_POINTS, description="arbitrary-waveform memory of this unit [points]: 1,000,000 standard, "
        "16,000,000 with the memory option (see *OPT?)")
    arb_filter: Literal["STEP", "OFF"] = Field(
        "STEP", description="FUNC:ARB:FILT written on open: STEP or OFF keep each slot's level flat (NORMal, the "
        "instrument's default, smears 10 ns slots and is not offered)")

    @model_validator(mode="after")
    def _filter_allows_rate(self) -> Keysight33500BOptions:
        # Keysight 33500/33600 help, RATE subsystem (FUNCtion:ARBitrary:SRATe): with the filter OFF the
        # 33500 Series plays arbitrary waveforms at up to 62.5 MSa/s (250 MSa/s with NORMal/STEP). The
        # limit is inferred from that page (not the printed guide) and applies to the 33500 Series.
        if self.arb_filter == "OFF" and self.sample_rate_hz > ARB_FILTER_OFF_MAX_HZ:
            raise ValueError(f"arb_filter = 'OFF' with sample_rate_hz = {self.sample_rate_hz:g}: the 33500 Series "
                             f"plays at most {ARB_FILTER_OFF_MAX_HZ / 1e6:g} MSa/s with the filter off; expected "
                             f"sample_rate_hz <= {ARB_FILTER_OFF_MAX_HZ:g} or arb_filter = 'STEP'")
        return self


class Keysight33500B(MessageDriver, PhaseModulator):
    """A 33500B channel as a :class:`PhaseModulator` (PyMeasure ``Agilent33500`` underneath)."""

    Options = Keysight33500BOptions
    #: ``*IDN?`` (guide, IEEE-488 common commands): "Keysight Technologies,33522B,<serial>,<firmware>" (earlier
    #: units: "Agilent Technologies"); any 33500B-series model, 33509B … 33522B
    IDENTITY = Identity("a Keysight/Agilent 33500B-series generator", r"^\s*(Keysight|Agilent)( Technologies)?\s*,\s*335\d\dB\b")
    CHANNELS = (1, 2)  # two roles (two clients' modulators) may share one two-channel generator

    @classmethod
    def config_limits(cls, options: Any) -> dict[str, Limit]:
        return {name: getattr(cls, name).limits() for name in ("v_pi_v", "bias_phase_rad", "gate_delay_ps")}

    def __init__(self, name: str, config: InstrumentConfig, *, adapter: Adapter | None = None) -> None:
        opts = self.parse_options(name, config)
        self.channel = opts.channel
        self.sample_rate_hz = opts.sample_rate_hz
        self.max_points = int(opts.max_points)
        self.arb_filter = str(opts.arb_filter)
        self.reference = ""  # ROSC:SOUR written by apply_operating_point ("EXT"/"INT")
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
        self._read_identity(ident)
        # binary blocks least-significant byte first; a filter that keeps each slot flat
        self.link.write("FORM:BORD SWAP")
        self._set(f"SOUR{self.channel}:FUNC:ARB:FILT {self.arb_filter}",
                  lambda: setattr(self.ch, "arb_filter", self.arb_filter))

    def apply_operating_point(self, station: StationConfig) -> None:
        """Reference clock from ``[sync] pattern_generator_reference`` (``ROSC:SOUR EXT`` or ``INT``),
        trigger delay ``gate_delay_ps`` of the role; output off until a pattern plays (Vπ and bias
        phase are kept by the driver from the same config)."""
        source = "EXT" if station.sync.pattern_generator_reference == "external" else "INT"
        with self.lock:
            self.link.write(f"ROSC:SOUR {source}")
            self.reference = source
            self.gate_delay_ps = float(getattr(self.config, "gate_delay_ps", 0.0))
            self.output_enabled = False
            self.set_output_load()

    def set_output_load(self) -> None:
        """Write ``OUTP<ch>:LOAD 50`` and read it back: the drive levels this driver computes are volts into
        the modulator's 50 Ω input (:data:`LOAD_OHM`); any other read-back (INFinity = High-Z: 9.9E+37) is
        one :class:`InstrumentReplyError` (written with the output off, as the operating point is)."""
        query = f"OUTP{self.channel}:LOAD?"
        with self.lock:
            self.link.write(f"OUTP{self.channel}:LOAD {LOAD_OHM:g}")
            reply = self.link.query(query)
            try:
                ohm = float(reply)
            except ValueError:
                ohm = math.nan
            if not abs(ohm - LOAD_OHM) <= 1e-6 * LOAD_OHM:
                shown = "INFinity (High-Z)" if ohm >= 9.9e37 else repr(reply)
                raise InstrumentReplyError(
                    f"output load reads {shown}; expected {LOAD_OHM:g} Ω (the drive voltages assume the modulator's "
                    f"50 Ω input)", instrument=self.name, resource=self.resource, command=query)

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
        return self.link.call_float(f"SOUR{self.channel}:VOLT?", lambda: self.ch.amplitude, 0.0, 2 * MAX_ABS_V, "Vpp")

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
        if idx.ndim != 1 or not MIN_POINTS <= idx.size <= self.max_points:
            raise ValueError(f"phase pattern must be 1-D with {MIN_POINTS} to {self.max_points} slots (options.max_points), "
                             f"got shape {idx.shape}")
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
        """Upload one fixed phase pattern and replay it once per external trigger.

        The same samples play on every trigger (no streaming): this is for a fixed test or calibration
        waveform, never for the client's per-slot randomness (that goes to the pattern generator).
        DAC codes round(sample·32767) as one binary block (``DATA:ARB:DAC``, int16, byte order
        ``FORM:BORD SWAP`` written on open)."""
        samples, vpp, offset = self.pattern_levels(phase_indices)
        dac = np.rint(samples * DAC_FULL_SCALE).astype("<i2")
        ch = self.ch
        command = f"SOUR{self.channel}:DATA:ARB:DAC {ARB_NAME}, "
        with self.lock:
            self._set(f"SOUR{self.channel}:DATA:VOL:CLE", ch.data_volatile_clear)
            self._set(f"{command}<{dac.size}-point binary block>",
                      lambda: self.link.adapter.write_binary_values(  # type: ignore[union-attr]
                          command, dac, datatype="h", is_big_endian=False,
                          termination=self.link.write_termination))
            self._set(f"SOUR{self.channel}:FUNC ARB", lambda: setattr(ch, "shape", "ARB"))
            self._set(f"SOUR{self.channel}:FUNC:ARB {ARB_NAME}", lambda: setattr(ch, "arb_file", ARB_NAME))
            self._set(f"SOUR{self.channel}:FUNC:ARB:SRAT", lambda: setattr(ch, "arb_srate", self.sample_rate_hz))
            self._set(f"SOUR{self.channel}:VOLT", lambda: setattr(ch, "amplitude", vpp))
            self._set(f"SOUR{self.channel}:VOLT:OFFS", lambda: setattr(ch, "offset", offset))
            self._set(f"SOUR{self.channel}:BURS:NCYC 1", lambda: setattr(ch, "burst_ncycles", 1))
            self._set(f"SOUR{self.channel}:BURS:STAT 1", lambda: setattr(ch, "burst_state", True))
            self.link.write(f"TRIG{self.channel}:SOUR EXT")
            self.pattern_length = int(dac.size)

    def set_dc_voltage(self, volts: float) -> None:
        """Constant drive voltage [V] (Vπ fringe scan): DC function at offset ``volts``."""
        v = check_range("volts", volts, -4.995, 4.995, "V")
        with self.lock:
            self._set(f"SOUR{self.channel}:FUNC DC", lambda: setattr(self.ch, "shape", "DC"))
            self._set(f"SOUR{self.channel}:VOLT:OFFS", lambda: setattr(self.ch, "offset", v))

    def status(self) -> dict[str, Any]:
        st = super().status()
        st.update(channel=self.channel, output_enabled=self.output_enabled, pattern_length=self.pattern_length,
                  max_points=self.max_points, arb_filter=self.arb_filter, reference=self.reference)
        return st

