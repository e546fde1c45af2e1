"""Station configuration: a TOML file validated by pydantic models.

The station is the Sagnac-loop testbed (see ``ARCHITECTURE.md``): a central node with a pulsed
laser, a 50:50 beam splitter closing a fibre loop, two single-photon detectors D0/D1 and a time
tagger; clients C1..CK in series on the loop, each with a phase modulator and an attenuator.

Every instrument is addressed by **role** (:meth:`StationConfig.roles`): ``laser``, ``D0``,
``D1``, ``time_tagger``, ``power_meter``, ``C<k>.phase_modulator``, ``C<k>.attenuator``.  Each role
is either simulated (``driver = "sim"``) or a real driver named by vendor and model with its VISA
or serial ``resource`` string.

The physical parameters below are the *model* of the station: for a simulated instrument they are
the simulator's truth; for real instruments they are the nominal / calibrated values the key-rate
model uses (calibration files overwrite them, see ``labqfl calibrate``).

Units are SI or stated in the field name (``_hz``, ``_ns``, ``_ps``, ``_km``, ``_db``).
The embedded default (``labqfl/data/default_station.toml``) is the simulated four-client testbed.
"""

from __future__ import annotations

import math
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from labqfl.errors import ConfigError

DEFAULT_STATION_NAME = "default_station.toml"


class _Model(BaseModel):
    # allow_inf_nan=False: no station quantity is legitimately infinite or NaN (optional ones are None when
    # absent); before, inf/nan were accepted and crashed later with OverflowError or gave a silently dead
    # station (review s36 input F2/F4).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# Upper bounds of the station's physical quantities (review s36 input F2/F4/F6: values up to 1e308 were accepted
# and crashed the simulator or the model with an OverflowError, or hung it, F1). Each is far outside any lab:
#: Longest time any station delay, jitter or pulse width may take [ps]: 1 s, i.e. 200 000 km of fibre (five
#: times round the Earth); every time is converted to int64 ps downstream (overflow past ~9.2e18 ps).
MAX_TIME_PS = 1e12
#: Largest loss or attenuation of one element [dB]: 300 dB leaves no photon from any laser (1 W at 1550 nm is
#: ~1e19 photons/s; 300 dB takes that to 1e-11/s); VOAs reach 60-100 dB.
MAX_LOSS_DB = 300.0
#: Largest (absolute) static phase [rad]: the phase is 2π-periodic, ±1000 rad (~160 turns) is a typo, not a setting.
MAX_PHASE_RAD = 1e3
#: Highest time-tagger input number: taggers have 2-64 inputs.
MAX_TAGGER_CHANNEL = 1024
#: A delay of one tagger input [ps]: finite and within ±MAX_TIME_PS (pydantic names the channel's key).
DelayPs = Annotated[float, Field(ge=-MAX_TIME_PS, le=MAX_TIME_PS)]
#: A tagger channel number (negative: the falling edge on Swabian taggers).
TaggerChannel = Annotated[int, Field(ge=-MAX_TAGGER_CHANNEL, le=MAX_TAGGER_CHANNEL)]
#: A trigger level [V]: tagger inputs take ±1 to ±2.5 V (and are damaged past ~±5 V).
TriggerLevelV = Annotated[float, Field(ge=-100, le=100)]
#: Most slots in one frame: 2**40 slots are 3 hours at 100 MHz (frames are ~65 536 slots, < 1 ms).
MAX_FRAME_SLOTS = 2**40


class DriverOptions(BaseModel):
    """Base of every driver's typed ``options`` table (one subclass per driver, declared by the driver).

    Unknown keys and wrong types are refused (strict: TOML types are taken as written, so
    ``baud_rate = "fast"`` or ``channel = 1.5`` never reach a driver). Validated at station load
    (:func:`parse_station_config`) and again when a driver is built.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


OptionsT = TypeVar("OptionsT", bound=DriverOptions)


class InstrumentConfig(_Model):
    """How to reach one instrument: ``driver = "sim"`` or a real driver class name."""

    driver: str = Field("sim", description="'sim' or a driver class name, e.g. 'IDQuantiqueID120'")
    resource: str | None = Field(None, description="VISA/serial resource string for real drivers")
    visa_library: str | None = Field(
        None, description="pyvisa backend, e.g. '@py' or 'path/to/device.yaml@sim' for pyvisa-sim"
    )
    # ≤ 1 h: an instrument that takes longer than an hour to answer one command is dead, not slow
    timeout_ms: int = Field(2000, gt=0, le=3_600_000, description="I/O timeout per command [ms], at most 1 h")
    options: dict[str, Any] = Field(default_factory=dict, description="driver-specific options")

    def needs_resource(self) -> bool:
        """True for a real driver that reaches its instrument by a VISA resource and has none. Checked by
        :func:`parse_station_config` only after the driver name is known to exist, so a misspelled driver is
        reported as unknown, not as lacking a resource (review s39 user F6)."""
        return self.driver != "sim" and not self.resource and self.driver not in _RESOURCELESS_DRIVERS

    @property
    def simulated(self) -> bool:
        return self.driver == "sim"


# Drivers that find their hardware without a VISA resource (vendor SDKs by serial number).
_RESOURCELESS_DRIVERS = {"SwabianTimeTagger"}
# Phase-modulator drivers that cannot take per-slot levels on their own, and why: with a real time tagger
# their client needs a pattern_generator role to carry its per-slot randomness.
_PHASE_DRIVERS_NEEDING_A_GENERATOR = {"Keysight33500B": "replays one fixed waveform",
                                      "GenericBitDrivenPhaseModulator": "takes its phase bits from a pattern generator"}
#: Bytes per sequence step on the wire, per pattern-generator driver fed run-length encoded steps over a
#: network link: the Pulse Streamer's vendor client packs '<' + n*'IBhh' (duration, digital mask, a0, a1;
#: PulseStreamerBase.enc_binary, pulsestreamer 2.1.2). Used by :func:`check_link_loads`.
STREAMED_STEP_BYTES = {"SwabianPulseStreamer": 9}
#: Default link budget [B/s] of such a generator: gigabit Ethernet (1.25e8 B/s raw) less protocol overhead.
LINK_BYTES_PER_S = 1e8


class LaserConfig(InstrumentConfig):
    """Pulsed laser of the central node."""

    rep_rate_hz: float = Field(100e6, gt=0, le=10e9, description="pulse repetition rate [Hz]")
    # ≤ 100 µm: fibre QKD runs at 0.4-2 µm; beyond the far infrared is a typo
    wavelength_nm: float = Field(1550.0, gt=0, le=1e5, description="centre wavelength [nm]")
    # ≤ 1 µs: pulsed QKD sources emit ps-ns pulses; a µs pulse fills a 1 MHz slot (review s36 input F1: 1e30 hung
    # keyrate)
    pulse_width_ps: float = Field(50.0, gt=0, le=1e6, description="optical pulse FWHM [ps], at most 1e6 (1 µs)")
    timing_jitter_ps: float = Field(2.0, ge=0, le=1e6, description="rms pulse timing jitter [ps], at most 1e6 (1 µs)")
    # ≤ 100 W: no fibre loop survives more (fibre fuse, damage threshold of connectors ~1-10 W)
    power_mw: float = Field(1.0, gt=0, le=1e5, description="average output power into the loop [mW]")


class PhaseModulatorConfig(InstrumentConfig):
    """Client phase modulator driven by an AWG/DAC (four-phase alphabet 0, π/2, π, 3π/2)."""

    # ≤ 10 kV: LiNbO3 waveguide modulators have Vπ of 3-10 V, bulk Pockels cells a few hundred V to kV
    v_pi_v: float = Field(4.0, gt=0, le=1e4, description="half-wave voltage Vπ [V]")
    v_pi_error: float = Field(0.0, ge=-0.5, le=0.5, description="relative error of the Vπ used to compute drive voltages (sim truth)")
    bias_phase_rad: float = Field(0.0, ge=-MAX_PHASE_RAD, le=MAX_PHASE_RAD,
                                  description="static bias phase φ0 of the modulator [rad]")
    gate_delay_ps: float = Field(0.0, ge=-MAX_TIME_PS, le=MAX_TIME_PS,
                                 description="AWG trigger delay so the gate hits this client's pulse [ps]")


class AttenuatorConfig(InstrumentConfig):
    """Client intensity modulator or variable attenuator setting the decoy levels."""

    max_attenuation_db: float = Field(60.0, gt=0, le=MAX_LOSS_DB, description="attenuation range [dB]")


class DetectorConfig(InstrumentConfig):
    """Single-photon detector at one output of the beam splitter."""

    kind: Literal["snspd", "spad"] = "snspd"
    efficiency: float = Field(0.8, gt=0, le=1, description="detection efficiency (incl. coupling)")
    # ≤ 1e9 /s: above any single-photon detector's maximum count rate (SNSPD ~1e8-1e9 /s, SPAD ~1e7 /s)
    dark_count_rate_hz: float = Field(50.0, ge=0, le=1e9, description="dark-count rate, free-running [Hz]")
    # ≤ 10 ms: SNSPDs recover in 10-100 ns, free-running InGaAs SPADs hold off at most ~100 µs
    dead_time_ns: float = Field(30.0, ge=0, le=1e7, description="non-paralysable dead time [ns]")
    afterpulse_prob: float = Field(0.0, ge=0, lt=1, description="total afterpulse probability per detection, "
                                   "un-gated (a gated detector registers about P·gate width/period of it)")
    # ≤ 1 s: the simulator draws an afterpulse's delay in int64 ps (overflow past ~2.5e14 ns; review s34)
    afterpulse_decay_ns: float = Field(100.0, gt=0, le=1e9,
                                       description="exponential decay time of afterpulsing [ns], at most 1 s")
    # ≤ 1 µs: SNSPDs have ~10-50 ps of jitter, SPADs ~100-500 ps
    jitter_ps: float = Field(50.0, ge=0, le=1e6, description="rms timing jitter [ps]")
    gated: bool = Field(False, description="gated (SPAD) instead of free-running")
    # ≤ 1 ms: gated SPADs open for ~1-100 ns
    gate_width_ns: float = Field(1.0, gt=0, le=1e6, description="gate width when gated [ns]")
    gate_delay_ps: float = Field(0.0, ge=-MAX_TIME_PS, le=MAX_TIME_PS,
                                 description="gate delay relative to the laser trigger [ps]")
    # ≤ 1000 K: SNSPDs run at 0.8-4 K, SPADs at 200-300 K
    temperature_k: float = Field(2.5, gt=0, le=1e3, description="operating temperature [K]")
    # ≤ 1e4: SNSPD bias currents are 1-100 µA, SPAD bias voltages 30-500 V
    bias_current_ua: float = Field(10.0, ge=0, le=1e4, description="bias (current for SNSPD [µA], voltage for SPAD [V])")


class TimeTaggerConfig(InstrumentConfig):
    """Time tagger: sync channel from the laser, one channel per detector."""

    resolution_ps: float = Field(1.0, gt=0, le=1e6, description="timestamp bin [ps]")  # taggers: 1-100 ps
    # ≤ 1024: time taggers have 2-64 inputs (Swabian Time Tagger X: 20, PicoQuant MultiHarp 160: 64)
    sync_channel: int = Field(1, ge=1, le=MAX_TAGGER_CHANNEL, description="channel number of the laser sync")
    detector_channels: dict[str, TaggerChannel] = Field(
        default_factory=lambda: {"D0": 2, "D1": 3}, description="tagger channel per detector"
    )
    # ≤ 2**24: Swabian's event divider is 16-bit (65 535); any tagger's divider is far below
    sync_divider: int = Field(1024, ge=1, le=2**24, description="one sync tag every N laser pulses")
    input_delays_ps: dict[str, DelayPs] = Field(
        default_factory=dict, description="software input delay per channel name ('sync','D0','D1') [ps]"
    )
    cable_delays_ps: dict[str, DelayPs] = Field(
        default_factory=lambda: {"sync": 0.0, "D0": 3_150.0, "D1": 3_420.0},
        description="true propagation delay of each signal to the tagger [ps] (sim truth)",
    )
    trigger_level_v: TriggerLevelV = Field(0.5, description="input trigger level [V] of every channel not in trigger_levels_v")
    trigger_levels_v: dict[str, TriggerLevelV] = Field(
        default_factory=dict, description="trigger level per channel name ('sync', 'D0', 'D1', 'marker', "
        "'marker.<client>') [V], e.g. a negative level for a falling-edge SNSPD readout, ~1 V for TTL markers; channels "
        "not named take trigger_level_v. Range per tagger model (checked when it opens): Time Tagger 20 0 to 2.5 V, "
        "Ultra -2.5 to 2.5 V, X -1 to 1 V")
    marker_channel: int | None = Field(
        None, ge=1, description="channel of the frame-start marker from the pattern generators (None = no markers: "
        "slot 0 is the first sync tag seen, or tagger time 0 with time_zero_is_pulse_zero)")
    marker_channels: dict[str, int] = Field(
        default_factory=dict, description="one frame-start marker input per client (client name -> channel), instead "
        "of marker_channel: each client's frames are kept or dropped on its own marker, so a frame lost at one client "
        "drops only the pairs involving it (delay names 'marker.<client>')")
    frame_slots: int = Field(65_536, ge=1, le=MAX_FRAME_SLOTS,
                             description="slots per frame: one marker at the start of every frame")
    reference_clock_channel: int | None = Field(
        None, ge=1, description="channel carrying the shared 10 MHz reference (None = the tagger's own clock)")
    reference_clock_hz: float = Field(10e6, gt=0, le=1e10, description="frequency of the reference at the input [Hz]")
    reference_clock_divider: int = Field(1, ge=1, le=2**24, description="event divider on the reference channel")
    dead_times_ps: dict[str, DelayPs] = Field(
        default_factory=dict, description="tagger dead time per channel name ('sync','D0','D1','marker') [ps]")
    conditional_filter_trigger: list[str] = Field(
        default_factory=list, description="channel names whose tags open the conditional filter (e.g. ['D0','D1'])")
    conditional_filter_filtered: list[str] = Field(
        default_factory=list, description="channel names passed only after a trigger tag (e.g. ['sync'])")
    time_zero_is_pulse_zero: bool = Field(
        False, description="the tagger's time 0 is the laser's pulse 0 (the master clock starts the tagger, as in the "
        "simulator): slots are numbered from tagger time 0 (corrected for the input's delay), so lost first sync tags "
        "or frame markers shift no slot; the first sync (first marker) must then lie within a quarter sync period "
        "(frame) of that grid. False (unknown; e.g. a tagger started before the clock): slot 0 is the first sync tag seen, and without frame "
        "markers a lost first sync shifts every slot by sync_divider (every block then aborts at QBER ~ 1/2)")

    def marker_inputs(self) -> dict[str, int]:
        """Frame-marker inputs by channel name: ``{"marker": ch}`` with ``marker_channel``,
        ``{"marker.<client>": ch, …}`` with ``marker_channels``, ``{}`` without markers."""
        if self.marker_channels:
            return {f"marker.{c}": int(ch) for c, ch in self.marker_channels.items()}
        return {"marker": int(self.marker_channel)} if self.marker_channel is not None else {}

    @model_validator(mode="after")
    def _tagger_sync(self) -> TimeTaggerConfig:
        if self.marker_channels and self.marker_channel is not None:
            raise ValueError("time_tagger: give either marker_channel (one marker input for all clients) or "
                             "marker_channels (one per client), not both")
        bad = {c: ch for c, ch in self.marker_channels.items() if isinstance(ch, bool) or ch < 1}
        if bad:
            raise ValueError(f"time_tagger.marker_channels: channels must be integers >= 1, got {bad}")
        names = {"sync", *self.detector_channels, *self.marker_inputs()}
        for field_name in ("dead_times_ps", "trigger_levels_v", "conditional_filter_trigger",
                           "conditional_filter_filtered"):
            unknown = sorted(set(getattr(self, field_name)) - names)
            if unknown:
                raise ValueError(f"time_tagger.{field_name} names unknown channels {unknown}; expected names from "
                                 f"{sorted(names)}")
        if bool(self.conditional_filter_trigger) != bool(self.conditional_filter_filtered):
            raise ValueError("time_tagger.conditional_filter_trigger and conditional_filter_filtered must be given "
                             "together (both empty = filter off)")
        filtered_markers = sorted(set(self.marker_inputs()) & set(self.conditional_filter_filtered))
        if filtered_markers:
            raise ValueError(f"time_tagger.conditional_filter_filtered must not contain {filtered_markers[0]!r}: every "
                             "frame marker is needed for slotting")
        if not self.marker_inputs() and "sync" in self.conditional_filter_filtered:
            raise ValueError("time_tagger.conditional_filter_filtered contains 'sync' but no marker_channel is set: "
                             "without markers slotting needs every (divided) sync tag")
        return self


class SyncConfig(_Model):
    """Shared timing of the station: the 10 MHz reference distributed to the instruments."""

    reference_hz: float = Field(10e6, gt=0, le=1e10, description="frequency of the station's shared reference clock [Hz]")
    pattern_generator_reference: Literal["external", "internal"] = Field(
        "external", description="clock source of the clients' pattern generators: the shared reference ('external') "
        "or their own oscillator ('internal')")


class PatternGeneratorConfig(InstrumentConfig):
    """A client's pattern generator (role ``C<k>.pattern_generator``): plays the client's frames of per-slot
    (phase, intensity) levels, streamed by :class:`labqfl.modulation.ModulationStreamer`. Its slot rate
    is ``laser.rep_rate_hz``, its frame ``time_tagger.frame_slots`` slots, its clock
    ``sync.pattern_generator_reference``; the driver's ``options`` map levels to outputs."""

    @model_validator(mode="after")
    def _real_only(self) -> PatternGeneratorConfig:
        if self.simulated:
            raise ValueError("a pattern_generator role needs a real driver (e.g. 'SwabianPulseStreamer', whose "
                             "protocol emulator is labqfl.sim_backends.pulse_streamer); the simulated testbed takes the "
                             "client's choices directly: leave pattern_generator out for a simulated client")
        return self


class MasterClockConfig(InstrumentConfig):
    """The station's master clock (role ``master_clock``): triggers the pulsed laser at
    ``laser.rep_rate_hz``, locked to the shared 10 MHz reference."""

    reference: Literal["external", "internal"] = Field(
        "external", description="clock source: the shared 10 MHz reference ('external') or its own oscillator")

    @model_validator(mode="after")
    def _real_only(self) -> MasterClockConfig:
        if self.simulated:
            raise ValueError("a master_clock role needs a real driver (e.g. 'SwabianPulseStreamerClock'); the simulated "
                             "laser keeps its own time: leave master_clock out of a simulated station")
        return self


class PowerMeterConfig(InstrumentConfig):
    """Optical power meter used as the reference in efficiency calibration."""

    wavelength_nm: float = Field(1550.0, gt=0, le=1e5)  # as laser.wavelength_nm
    relative_uncertainty: float = Field(0.02, ge=0, lt=1, description="calibration uncertainty of the head")


class ClientConfig(_Model):
    """One client (user) on the loop: its QRNG seed, encoding and instruments."""

    name: str = Field(..., pattern=r"^C[0-9]+$", description="client name, 'C1'..'CK'")
    seed: int = Field(..., ge=0, description="seed of this client's random stream when randomness = 'seeded' (public: never a secret)")
    randomness: Literal["csprng", "seeded"] = Field(
        "csprng",
        description=(
            "source of the client's modulation choices: 'csprng' (default) = AES-256 in counter mode keyed "
            "with 256 fresh bits from the OS CSPRNG per acquisition, never derivable from anything public; "
            "'seeded' = a reproducible stream of (seed, acquisition epoch), for tests and benchmarks only: "
            "anyone with the station file can predict it. (A QRNG instrument is not yet supported.)"
        ),
    )
    intensities: list[float] = Field(
        default_factory=lambda: [0.1, 0.02, 0.0],
        description="mean photon numbers per pulse leaving the client towards the node; index 0 = signal",
    )
    intensity_probs: list[float] = Field(default_factory=lambda: [0.8, 0.1, 0.1])
    intensity_rel_uncertainty: float | None = Field(
        None, ge=0, lt=1,
        description=(
            "relative calibration uncertainty δ of this client's declared mean photon numbers (e.g. 0.05: every "
            "true μ lies within ±5 % of `intensities`, power-meter and attenuator calibration and drift together). "
            "The key-length analysis then holds for any μ in that band (docs/protocol.md (P10)); the vacuum-role "
            "level (the weakest, e.g. a modulator's extinction floor) is then taken anywhere from 0 to its value "
            "times (1 + δ), so declare that floor at its guaranteed maximum (the worst extinction). Every pair is "
            "analysed with the station's largest δ; the declared μ are taken as exact only where no client declares "
            "δ > 0 (true of the simulator). A key is called information-theoretically secure only when all three "
            "hold (labqfl.provenance.is_information_theoretic): a hardware physical layer, QRNG randomness at "
            "both clients, and δ > 0 declared by both clients of its pair (δ = 0 is the exact-μ analysis). QRNG "
            "clients are not supported yet (`randomness` is 'csprng' or 'seeded'), so a hardware key rests on the "
            "clients' CSPRNG and is computationally secure (docs/simulator.md, \"Clients' randomness\")"),
    )
    basis_x_prob: float = Field(0.9, gt=0, lt=1, description="probability of basis X = {0, π}; Y = {π/2, 3π/2} otherwise")
    insertion_loss_db: float = Field(1.0, ge=0, le=MAX_LOSS_DB, description="insertion loss of the client's modulators [dB]")
    phase_modulator: PhaseModulatorConfig = Field(default_factory=PhaseModulatorConfig)
    attenuator: AttenuatorConfig = Field(default_factory=AttenuatorConfig)
    pattern_generator: PatternGeneratorConfig | None = Field(
        None, description="the client's pattern generator (real hardware only; None: none, as in simulation)")

    @field_validator("intensities")
    @classmethod
    def _intensities(cls, v: list[float]) -> list[float]:
        if not 1 <= len(v) <= 8:
            raise ValueError(f"expected 1 to 8 intensities, got {len(v)}")
        if any((not math.isfinite(x)) or x < 0 for x in v):
            raise ValueError("intensities must be finite mean photon numbers >= 0")
        if v[0] <= 0:
            raise ValueError("the signal intensity (index 0) must be > 0")
        return v

    @model_validator(mode="after")
    def _probs(self) -> ClientConfig:
        p = self.intensity_probs
        if len(p) != len(self.intensities):
            raise ValueError(
                f"intensity_probs has {len(p)} entries but intensities has {len(self.intensities)}; expected one probability per intensity"
            )
        if any(x < 0 for x in p) or abs(sum(p) - 1.0) > 1e-9:
            raise ValueError(f"intensity_probs must be >= 0 and sum to 1, got sum {sum(p):.6g}")
        return self


class LoopConfig(_Model):
    """The fibre loop: segments between node and clients, splitter and interference."""

    segments_km: list[float] = Field(
        default_factory=lambda: [2.0, 2.0, 2.0, 2.0, 2.0],
        description="fibre lengths node→C1, C1→C2, …, CK→node [km]; K+1 entries",
    )
    # ≤ 1000 dB/km: telecom fibre 0.15-0.35 dB/km, even plastic fibre ~100-200 dB/km
    fiber_loss_db_per_km: float = Field(0.2, ge=0, le=1e3, description="fibre attenuation [dB/km]")
    node_loss_db: float = Field(1.0, ge=0, le=MAX_LOSS_DB,
                                description="loss from the loop back to the splitter (circulator, connectors) [dB]")
    beam_splitter_ratio: float = Field(0.5, gt=0, lt=1, description="splitter transmission (0.5 = 50:50)")
    visibility: float = Field(0.99, gt=0, le=1, description="interference visibility V")
    phase_drift_rad_per_sqrt_s: float = Field(
        0.01, ge=0, le=1e4, description="random-walk strength of the loop's residual phase drift [rad/√s]"
    )
    phase_drift_correlation_s: float | None = Field(
        None, gt=0, le=1e9,
        description="correlation time τ of that drift [s]: the phase relaxes towards 0 (Ornstein–Uhlenbeck, "
                    "stationary rms σ·√(τ/2)); absent: an unbounded random walk, whose QBER grows ∝ time",
    )
    fiber_refractive_index: float = Field(1.468, gt=1, le=4)  # silica 1.44-1.47; no transparent medium above 4

    @field_validator("segments_km")
    @classmethod
    def _segments(cls, v: list[float]) -> list[float]:
        # ≤ 100 000 km a segment: 2.5 times round the Earth, and 20 000 dB at 0.2 dB/km
        if any((not math.isfinite(x)) or not 0 <= x <= 1e5 for x in v):
            raise ValueError("segment lengths must be finite, >= 0 and <= 100000 km")
        return v


#: Largest schedule weight (frames of one pair per schedule cycle).
MAX_PAIR_FRAMES = 4096
#: Most clients one station (one Sagnac loop) holds. Every pulse passes every client's modulators, so
#: at 0.5 dB each a loop of 256 clients costs 128 dB of insertion loss alone; at N = 64 most pairs
#: already make no key (docs/scaling.md), and ``labqfl station make --clients 256`` takes ~20 s for
#: its 32 640 pairs. Before this bound, ``station make --clients 100000`` ran out of memory.
MAX_CLIENTS = 256


class ScheduleConfig(_Model):
    """Time-division schedule: pairs take turns on the loop in frames of consecutive slots."""

    slots_per_frame: int = Field(65536, ge=1, le=MAX_FRAME_SLOTS, description="consecutive pulse slots given to one pair")
    pairs: list[tuple[str, str]] | Literal["all"] = Field("all", description="'all' or a list of [Ci, Cj]")
    weights: dict[str, int] | None = Field(
        None, description="frames per schedule cycle of each scheduled pair, keyed 'Ci-Cj' (earlier client first); "
        "None = one frame each (equal time shares). `labqfl station make` sets them from the key-rate model so "
        "that the pairs' key rates balance")

    @field_validator("pairs", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        """Pairs as the CLI writes them ("C1-C2") or as lists (["C1", "C2"]); an empty list refused: a
        station with no pair to schedule acquired nothing and failed later with "schedule needs at least
        one pair", naming no file or field."""
        if isinstance(v, list):
            if not v:
                raise ValueError("no pair scheduled; expected 'all' or at least one pair, e.g. [\"C1-C2\"] or "
                                 "[[\"C1\", \"C2\"]]")
            out = []
            for p in v:
                if isinstance(p, str):
                    a, sep, b = p.partition("-")
                    if not sep or not a or not b:
                        raise ValueError(f"pair {p!r} is not of the form 'Ci-Cj' (or [\"Ci\", \"Cj\"])")
                    out.append((a, b))
                else:
                    out.append(p)
            return out
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        if v is not None:
            bad = {k: w for k, w in v.items() if not 1 <= w <= MAX_PAIR_FRAMES}
            if bad:
                raise ValueError(f"schedule weights must be integers from 1 to {MAX_PAIR_FRAMES} frames per cycle, "
                                 f"got {bad}")
        return v


class InterceptResendConfig(_Model):
    enabled: bool = False
    client: str = Field("C1", description="Eve sits on the segment right after this client's pulse leaves")
    fraction: float = Field(1.0, ge=0, le=1, description="fraction of pulses intercepted")


class FaultsConfig(_Model):
    visibility_collapse_at_s: float | None = Field(None, ge=0, description="time at which V drops [s]")
    visibility_after_collapse: float = Field(0.5, gt=0, le=1)
    detector_dies: str | None = Field(None, description="'D0' or 'D1' stops clicking at detector_dies_at_s")
    detector_dies_at_s: float = Field(0.0, ge=0)
    sync_drop_prob: float = Field(
        0.0, ge=0, lt=1, description="probability that each (divided) sync tag is lost, independently, the first "
        "one too (simulated tagger)")


class SimulationConfig(_Model):
    """Settings of the Monte-Carlo simulator (only used by simulated instruments)."""

    seed: int = Field(12345, ge=0, description="seed of the channel/detector randomness (not the clients')")
    qrng_epoch_base: int | None = Field(
        None, ge=0, lt=2**60,
        description=(
            "first acquisition epoch of the simulated testbed (public: it names acquisitions). None (default): "
            "a fresh random base from the OS per testbed. Seeded clients' choices are a function of (seed, "
            "epoch): an integer makes them reproducible for tests and benchmarks (never distil keys from two "
            "runs with the same value). CSPRNG clients draw a fresh key per acquisition whatever the epoch."
        ),
    )
    block_duration_s: float = Field(0.05, gt=0, le=1e6, description="station time per streamed tag block [s] (the simulator's "
                                    "window, the nodes' tag block; 50 ms: over nodes every block costs messages, and "
                                    "10 ms blocks made the networked acquisition 1.3x slower, docs/nodes.md)")
    emulate_pattern_generators: bool = Field(
        False, description="the clients' pattern_generator roles talk to Pulse Streamer emulators in this process, on "
        "their loopback resources, and the simulated loop is driven by what those play (docs/lab_setup.md)")
    emulate_time_tagger: bool = Field(
        False, description="the time_tagger role (driver 'SwabianTimeTagger') runs on an emulated Swabian SDK whose "
        "tags come from the simulated loop (labqfl.sim_backends.timetagger_sdk; docs/lab_setup.md): the real driver, "
        "an emulated instrument")
    emulate_detectors: bool = Field(
        False, description="the detectors D0/D1 (driver 'SingleQuantumEos') talk to a WebSQ controller emulated in "
        "the process that opens them, on free loopback ports instead of their resource's; its bias and enable state "
        "switch the simulated loop's detectors and its count stream counts their clicks "
        "(labqfl.sim_backends.websq; docs/lab_setup.md): the real driver, an emulated instrument")
    intercept_resend: InterceptResendConfig = Field(default_factory=InterceptResendConfig)
    faults: FaultsConfig = Field(default_factory=FaultsConfig)


# -- options of the simulated roles (``driver = "sim"``) ----------------------------------------
class SimNoOptions(DriverOptions):
    """A simulated role that takes no options: any key is refused."""


class SimPhaseModulatorOptions(DriverOptions):
    """Options of a simulated phase modulator (see docs/simulator.md)."""

    bias_setting_rad: float = Field(0.0, description="bias setting of the simulated drive [rad] (calibration writes it)")
    true_gate_delay_ps: float | None = Field(
        None, description="sim truth: the AWG delay that actually hits this client's pulse [ps] (default: gate_delay_ps)")
    gate_tolerance_ps: float = Field(500.0, gt=0, description="a gate further than this from the true delay misses the pulse [ps]")
    amplitude_vpp: float | None = Field(None, gt=0, description="drive amplitude [Vpp] (default 4·Vπ)")


class SimAttenuatorOptions(DriverOptions):
    """Options of a simulated attenuator."""

    nominal_attenuation_db: float | None = Field(
        None, ge=0, description="attenuation the decoy levels are referred to [dB] (default min(50 dB, max range))")


class SimDetectorOptions(DriverOptions):
    """Options of a simulated detector."""

    dark_bias_scale: float | None = Field(
        None, gt=0, description="DCR(b) = DCR0·exp((b − b0)/scale); scale in µA (SNSPD) or V (SPAD), default 1 µA / 0.5 V")


class SimPowerMeterOptions(DriverOptions):
    """Options of a simulated power meter."""

    laser_tap_ratio: float = Field(0.01, gt=0, le=1, description="fraction of the laser power at the monitor tap")
    noise_rel: float = Field(1e-3, ge=0, description="relative noise of one reading (divided by √averaging)")
    noise_floor_w: float = Field(1e-12, ge=0, description="absolute noise floor [W]")


def sim_options_model(role: str) -> type[DriverOptions]:
    """The options model of the simulated instrument serving ``role``."""
    if role.endswith(".phase_modulator"):
        return SimPhaseModulatorOptions
    if role.endswith(".attenuator"):
        return SimAttenuatorOptions
    if role in ("D0", "D1"):
        return SimDetectorOptions
    if role == "power_meter":
        return SimPowerMeterOptions
    return SimNoOptions


def _strip_value_error(msg: str) -> str:
    return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg


def validate_options(model: type[OptionsT], options: dict[str, Any], *, source: str, field: str, driver: str,
                     role: str | None = None) -> OptionsT:
    """Validate one role's ``options`` table against its driver's model.

    Raises :class:`ConfigError` with one line naming the source, the field
    (``<field>.options.<key>``), the role, the value and what was expected, e.g.
    ``station.toml: field 'clients.0.phase_modulator.options.chanel' (role C1.phase_modulator):
    unknown option for Keysight33500B; expected one of: channel, sample_rate_hz, max_points, arb_filter; got 2``.
    """
    try:
        return model.model_validate(options)
    except ValidationError as err:
        e = err.errors()[0]
        key = ".".join(str(p) for p in e["loc"])
        loc = ".".join(p for p in (field, "options", key) if p)
        who = f" (role {role})" if role else ""
        more = _also(err.errors(), ".".join(p for p in (field, "options") if p))
        if e["type"] == "extra_forbidden":
            names = list(model.model_fields)
            expected = f"expected one of: {', '.join(names)}" if names else "expected no options (it takes none)"
            raise ConfigError(f"{source}: field '{loc}'{who}: unknown option for {driver}; {expected}; "
                              f"got {e['input']!r}{more}") from None
        got = options if not key else e.get("input")
        raise ConfigError(f"{source}: field '{loc}'{who}: {_strip_value_error(e['msg'])} (option of {driver}); "
                          f"got {got!r}{more}") from None


_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


class FlServerConfig(_Model):
    """The federated-learning server node (``labqfl node server``, docs/nodes.md): where its
    mutual-TLS front listens and the SuperNodes dial, its certificate name and folder, its data
    folder. Optional: without this section ``labqfl node server`` takes the same from its options."""

    name: str = Field("server", pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$",
                      description="certificate CN of the server node (a DNS label)")
    host: str = Field("127.0.0.1", description="IP address or DNS name of the front (listen / dial)")
    port: int = Field(9092, ge=0, le=65535, description="TCP port of the front (0: any free port, loopback only)")
    certs: str | None = Field(None, min_length=1, description="folder with ca.pem and node-<name>.pem/.key")
    data: str | None = Field(None, min_length=1, description="the server node's own data folder")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        import ipaddress

        try:
            ipaddress.ip_address(v)
            return v
        except ValueError:
            pass
        if not _HOST_RE.match(v):
            raise ValueError("expected an IP address or a DNS name (letters, digits, '-' and '.')")
        return v


class StationConfig(_Model):
    """The whole station. Load with :func:`load_station_config`."""

    name: str = Field("sagnac-4client-sim", min_length=1)
    description: str = ""
    laser: LaserConfig = Field(default_factory=LaserConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    clients: list[ClientConfig]
    detectors: dict[str, DetectorConfig] = Field(
        default_factory=lambda: {"D0": DetectorConfig(), "D1": DetectorConfig()}
    )
    time_tagger: TimeTaggerConfig = Field(default_factory=TimeTaggerConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    master_clock: MasterClockConfig | None = Field(None, description="the laser's trigger source (None: the laser's own)")
    power_meter: PowerMeterConfig = Field(default_factory=PowerMeterConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    fl_server: FlServerConfig | None = Field(None, description="the federated-learning server node (docs/nodes.md)")

    @model_validator(mode="after")
    def _consistency(self) -> StationConfig:
        names = [c.name for c in self.clients]
        if not 2 <= len(self.clients) <= MAX_CLIENTS:
            raise ValueError(f"a station holds 2 to {MAX_CLIENTS} clients, got {len(self.clients)}")
        if len(set(names)) != len(names):
            raise ValueError(f"client names must be unique, got {names}")
        if set(self.detectors) != {"D0", "D1"}:
            raise ValueError(f"detectors must be exactly D0 and D1, got {sorted(self.detectors)}")
        if len(self.loop.segments_km) != len(self.clients) + 1:
            raise ValueError(
                f"loop.segments_km has {len(self.loop.segments_km)} entries; expected {len(self.clients) + 1} "
                f"(node→C1, …, C{len(self.clients)}→node)"
            )
        missing = {"D0", "D1"} - set(self.time_tagger.detector_channels)
        if missing:
            raise ValueError(f"time_tagger.detector_channels lacks {sorted(missing)}")
        tt = self.time_tagger
        chans = list(tt.detector_channels.values()) + [tt.sync_channel]
        chans += [*tt.marker_inputs().values(), *([tt.reference_clock_channel] if tt.reference_clock_channel else [])]
        if len(set(chans)) != len(chans):
            raise ValueError(f"time tagger channels must be distinct, got detectors + sync (+ marker, reference) = {chans}")
        if tt.marker_channels and set(tt.marker_channels) != set(names):
            raise ValueError(f"time_tagger.marker_channels must give one channel per client {names}; got "
                             f"{sorted(tt.marker_channels)}")
        if self.schedule.pairs != "all":
            seen: set[frozenset[str]] = set()
            for a, b in self.schedule.pairs:
                if a not in names or b not in names or a == b:
                    raise ValueError(f"schedule pair ({a}, {b}) must name two different clients from {names}")
                if frozenset((a, b)) in seen:  # "C1-C2" and "C2-C1" collapsed into one pair shown twice
                    raise ValueError(f"schedule.pairs lists the pair of {a} and {b} twice; expected each pair once")
                seen.add(frozenset((a, b)))
        if self.schedule.weights is not None:
            want = [f"{a}-{b}" for a, b in self.pairs()]
            if len(set(want)) != len(want):
                raise ValueError("schedule.weights needs each scheduled pair once; schedule.pairs lists a pair twice")
            extra = sorted(set(self.schedule.weights) - set(want))
            absent = [p for p in want if p not in self.schedule.weights]
            if extra or absent:
                raise ValueError(f"schedule.weights must give one weight per scheduled pair (names 'Ci-Cj', earlier "
                                 f"client first); unknown {extra}, missing {absent[:8]}"
                                 f"{' …' if len(absent) > 8 else ''}")
        ir = self.simulation.intercept_resend
        if ir.enabled and ir.client not in names:
            raise ValueError(f"simulation.intercept_resend.client {ir.client!r} is not one of {names}")
        if self.simulation.emulate_time_tagger and tt.driver != "SwabianTimeTagger":
            raise ValueError(f"simulation.emulate_time_tagger emulates the Swabian Time Tagger's SDK: expected "
                             f"time_tagger.driver = \"SwabianTimeTagger\", got {tt.driver!r}")
        if self.simulation.emulate_detectors:
            other = {d: ic.driver for d, ic in self.detectors.items() if ic.driver != "SingleQuantumEos"}
            if other:
                raise ValueError(f"simulation.emulate_detectors emulates a Single Quantum WebSQ controller: expected "
                                 f"detectors D0 and D1 on driver \"SingleQuantumEos\", got {other}")
            if not tt.simulated and not self.simulation.emulate_time_tagger:
                raise ValueError(f"simulation.emulate_detectors: emulated detectors see the simulated loop, but the "
                                 f"time tagger ({tt.driver!r}) records the lab's light; expected time_tagger.driver = "
                                 f"\"sim\" or simulation.emulate_time_tagger = true")
        dd = self.simulation.faults.detector_dies
        if dd is not None and dd not in ("D0", "D1"):
            raise ValueError(f"simulation.faults.detector_dies must be 'D0' or 'D1', got {dd!r}")
        return self

    # -- derived views -------------------------------------------------------------------
    @property
    def client_names(self) -> list[str]:
        return [c.name for c in self.clients]

    def client(self, name: str) -> ClientConfig:
        for c in self.clients:
            if c.name == name:
                return c
        raise ConfigError(f"no client {name!r} in station {self.name!r}; clients are {self.client_names}")

    def intensity_rel_uncertainty(self) -> float:
        """δ the key-length analysis uses for every pair: the largest ``intensity_rel_uncertainty`` any
        client declares (one δ for the whole station, conservative for the others), 0 where none does."""
        return max((c.intensity_rel_uncertainty or 0.0 for c in self.clients), default=0.0)

    def pairs(self) -> list[tuple[str, str]]:
        """Scheduled pairs (i, j) with i before j on the loop, in schedule order."""
        if self.schedule.pairs == "all":
            n = self.client_names
            return [(n[a], n[b]) for a in range(len(n)) for b in range(a + 1, len(n))]
        order = {n: k for k, n in enumerate(self.client_names)}
        return [tuple(sorted(p, key=order.__getitem__)) for p in self.schedule.pairs]  # type: ignore[misc]

    def pair_frames(self) -> list[int]:
        """Frames per schedule cycle of each pair of :meth:`pairs` (in that order): the schedule's
        ``weights``, or 1 each."""
        w = self.schedule.weights
        return [1 if w is None else int(w[f"{a}-{b}"]) for a, b in self.pairs()]

    def roles(self) -> dict[str, InstrumentConfig]:
        """Every instrument by role name, in the order the Station opens them."""
        r: dict[str, InstrumentConfig] = {}
        if self.master_clock is not None:
            r["master_clock"] = self.master_clock
        r["laser"] = self.laser
        for c in self.clients:
            r[f"{c.name}.phase_modulator"] = c.phase_modulator
            r[f"{c.name}.attenuator"] = c.attenuator
            if c.pattern_generator is not None:
                r[f"{c.name}.pattern_generator"] = c.pattern_generator
        r["D0"] = self.detectors["D0"]
        r["D1"] = self.detectors["D1"]
        r["time_tagger"] = self.time_tagger
        r["power_meter"] = self.power_meter
        return r

    def role_fields(self) -> dict[str, str]:
        """Where each role sits in the station file, as a dotted field path (``clients.0.attenuator``)."""
        r = {"master_clock": "master_clock", "laser": "laser"}
        for k, c in enumerate(self.clients):
            r[f"{c.name}.phase_modulator"] = f"clients.{k}.phase_modulator"
            r[f"{c.name}.attenuator"] = f"clients.{k}.attenuator"
            r[f"{c.name}.pattern_generator"] = f"clients.{k}.pattern_generator"
        r.update({"D0": "detectors.D0", "D1": "detectors.D1", "time_tagger": "time_tagger",
                  "power_meter": "power_meter"})
        return r

    def role(self, role: str) -> InstrumentConfig:
        roles = self.roles()
        if role not in roles:
            raise ConfigError(f"station {self.name!r} has no role {role!r}; roles are {list(roles)}")
        return roles[role]

    @property
    def all_simulated(self) -> bool:
        return all(r.simulated for r in self.roles().values())


#: Further problems of a file named after the first one, each message cut to this many characters.
_ALSO_SHOWN, _ALSO_CHARS = 4, 80


def _also(errors: list[Any], prefix: str = "") -> str:
    """The problems after the first, compactly on the same line (review s34 L12: "(+1 more problems)" named
    none): ``; also: 'clients': Field required; 'detectors.D0.efficiency': Input should be …``, at most
    :data:`_ALSO_SHOWN` of them, then ``; +N more``. ``prefix``: prepended to each field path."""
    parts = []
    for e in errors[1:_ALSO_SHOWN + 1]:
        loc = ".".join(p for p in (prefix, ".".join(str(x) for x in e["loc"])) if p) or "(top level)"
        msg = "unknown field" if e["type"] == "extra_forbidden" else " ".join(_strip_value_error(e["msg"]).split())
        msg = msg if len(msg) <= _ALSO_CHARS else msg[:_ALSO_CHARS - 1] + "…"
        parts.append(f"'{loc}': {msg}")
    rest = len(errors) - 1 - len(parts)
    return (f"; also: {'; '.join(parts)}" if parts else "") + (f"; +{rest} more" if rest > 0 else "")


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the station model at ``loc`` (a validation error's location without its last part:
    list indices and dict keys stepped over); [] where it is not a model."""
    import typing

    model: Any = StationConfig
    skip = False  # the next part is a list index or a dict key
    for part in loc:
        if skip:
            skip = False
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann, model = fields[part].annotation, None
        stack = [ann]
        while stack and model is None:  # the first model inside Optional / list / dict
            t = stack.pop(0)
            if isinstance(t, type) and issubclass(t, BaseModel):
                model = t
            else:
                if typing.get_origin(t) in (list, dict):
                    skip = True
                stack.extend(a for a in typing.get_args(t) if a is not str)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _unknown_field_text(loc: tuple[Any, ...]) -> str:
    """Review s38 user F7: the unknown-field error sent the user to `labqfl station show`, whose table names no
    field; it suggests the closest valid name now, and the --json output that lists them all."""
    import difflib

    near = difflib.get_close_matches(str(loc[-1]), _fields_at(tuple(loc[:-1])), n=1, cutoff=0.6) if loc else []
    hint = f"did you mean '{near[0]}'? " if near else ""
    return f"unknown field ({hint}check spelling; `labqfl station show --json` lists the valid fields)"


def _format_validation_error(source: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = _strip_value_error(e["msg"])
    got = e.get("input")
    got_s = "" if isinstance(got, dict) or e["type"] == "missing" else f"; got {got!r}"
    if e["type"] == "extra_forbidden":
        msg = _unknown_field_text(tuple(e["loc"]))
    return f"{source}: field '{loc}': {msg}{got_s}{_also(err.errors())}"


def parse_station_config(data: dict[str, Any], source: str = "<dict>") -> StationConfig:
    """Validate a station mapping; raise :class:`ConfigError` with one line naming the field.

    Beyond the models above, every role is checked against its driver's declaration without
    opening anything: the ``options`` of simulated roles against :func:`sim_options_model`; real
    roles (driver class, typed options, config values inside the driver's ranges, spectral range
    against ``laser.wavelength_nm``) by :func:`labqfl.station.validate_driver_roles` — imported
    only when the station has a real role, so simulated stations never load the driver stack.
    """
    try:
        cfg = StationConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None
    fields = cfg.role_fields()
    real = False
    for role, ic in cfg.roles().items():
        if ic.simulated:
            validate_options(sim_options_model(role), ic.options, source=source, field=fields[role],
                             driver="the simulated instrument", role=role)
        else:
            real = True
    if real:
        from labqfl.station import validate_driver_roles

        validate_driver_roles(cfg, source)  # first: an unknown driver name is reported as such
        for role, ic in cfg.roles().items():
            if ic.needs_resource():
                raise ConfigError(f"{source}: field '{fields[role]}.resource' (role {role}): driver {ic.driver!r} "
                                  f"needs a 'resource' string (e.g. 'ASRL/dev/ttyUSB0::INSTR'); got none")
        check_link_loads(cfg, source)
    return cfg


def link_load_bytes_per_s(slot_rate_hz: float, frame_slots: int, dark_frames_between: int,
                          step_bytes: int = 9) -> float:
    """Average bytes per second a client's uploads need: per cycle of one fresh frame (up to one step of
    ``step_bytes`` per slot: random levels change nearly every slot) and ``dark_frames_between`` dark frames
    (one step each), over the cycle's ``(n + 1)·frame_slots`` slots."""
    f, n = int(frame_slots), int(dark_frames_between)
    return float(slot_rate_hz) * step_bytes * (f + n) / ((n + 1) * f)


def dark_frames_needed(slot_rate_hz: float, frame_slots: int, link_bytes_per_s: float, step_bytes: int = 9,
                       cycle_frames: int = 1) -> int | None:
    """The smallest ``dark_frames_between`` whose :func:`link_load_bytes_per_s` fits the link and whose
    ``n + 1`` is coprime to the pair schedule's ``cycle_frames`` (:func:`duty_cycle_aliases`); None when no
    ``n`` fits (one dark step per frame alone exceeds the link)."""
    f, rate, budget = int(frame_slots), float(slot_rate_hz), float(link_bytes_per_s)
    if budget * f <= step_bytes * rate:
        return None
    n = max(0, math.ceil(f * (step_bytes * rate - budget) / (budget * f - step_bytes * rate)))
    while link_load_bytes_per_s(rate, f, n, step_bytes) > budget or duty_cycle_aliases(n, cycle_frames):
        n += 1  # floating-point guard, then the next n whose fresh frames reach every pair
    return n


def duty_cycle_aliases(dark_frames_between: int, cycle_frames: int) -> bool:
    """True when a duty cycle of ``n`` dark frames after each fresh one starves some pairs: fresh frames are
    ``k·(n + 1)`` and frame ``f`` belongs to the pair at schedule position ``f mod W``
    (:meth:`labqfl.contracts.schedule.PairSchedule.pair_index`, ``W = cycle_frames``), so fresh frames reach
    only the positions that are multiples of ``gcd(n + 1, W)``. With ``gcd = 1`` every position gets 1 fresh
    frame in ``n + 1`` (the share :func:`fresh_slot_rate_hz` assumes)."""
    n = int(dark_frames_between)
    return n > 0 and math.gcd(n + 1, int(cycle_frames)) != 1


def nearest_duty_cycle(n: int, need: int, cycle_frames: int) -> int:
    """The ``dark_frames_between`` nearest ``n`` that fits the link (``>= need``, the link load falls with n)
    and does not alias with the schedule (:func:`duty_cycle_aliases`); the smaller one on a tie."""
    for d in range(0, int(cycle_frames) + max(n, need) + 2):
        for m in (n - d, n + d):
            if m >= need and not duty_cycle_aliases(m, cycle_frames):
                return m
    raise AssertionError("unreachable: n + 1 = a multiple of W plus 1 is coprime to W")


def _dark_frames(pg: Any) -> int:
    """``options.dark_frames_between`` of a real pattern generator (its duty cycle); 0 for none or a simulated one."""
    return 0 if pg is None or pg.simulated else int(pg.options.get("dark_frames_between", 0))


def _dark_frames_field(source: str, k: int, c: Any) -> str:
    """The one-line errors' name of client ``k``'s duty-cycle field."""
    return f"{source}: field 'clients.{k}.pattern_generator.options.dark_frames_between' (role {c.name}.pattern_generator)"


def fresh_frames_cycle(cfg: StationConfig) -> int:
    """Frames per duty cycle of the station's slowest client: ``n + 1`` for a real pattern generator with
    ``options.dark_frames_between = n`` (1 fresh frame, then ``n`` dark ones, recorded lost and never key
    slots: :class:`labqfl.modulation.ModulationStreamer`), the largest over the clients since a pair's slot
    carries key only when both of its clients modulated it; 1 without a duty cycle."""
    return max(_dark_frames(c.pattern_generator) + 1 for c in cfg.clients) if cfg.clients else 1


def fresh_slot_rate_hz(cfg: StationConfig) -> float:
    """Key-carrying (fresh) slots per second of the station: ``laser.rep_rate_hz`` x the fresh fraction
    1/:func:`fresh_frames_cycle` (the minimum over the clients); ``rep_rate_hz`` itself without a duty cycle.
    The key-rate model's slots-to-seconds conversions use it (:mod:`labqfl.qkd.blocksize`,
    :mod:`labqfl.planning`, :mod:`labqfl.qkd.keyrate`)."""
    return float(cfg.laser.rep_rate_hz) / fresh_frames_cycle(cfg)


def check_link_loads(cfg: StationConfig, source: str = "station") -> None:
    """Refuse a station whose clients' fresh frames cannot reach their pattern generators: for a generator
    fed run-length encoded steps over a network link (:data:`STREAMED_STEP_BYTES`), slot rate x bytes per
    step x fresh fraction (+ one step per dark frame) must fit ``options.link_bytes_per_s`` (default
    :data:`LINK_BYTES_PER_S`); the one-line error names ``options.dark_frames_between`` and the value it
    needs. Emulated generators are checked too: they stand for the instrument on its link. Called after the
    driver validated the options (:func:`parse_station_config`). The duty cycle must also reach every
    scheduled pair (:func:`_check_duty_cycle`)."""
    rate, f = cfg.laser.rep_rate_hz, cfg.time_tagger.frame_slots
    for k, c in enumerate(cfg.clients):
        pg = c.pattern_generator
        step = None if pg is None or pg.simulated else STREAMED_STEP_BYTES.get(pg.driver)
        if pg is None or step is None:
            continue
        n = _dark_frames(pg)
        budget = float(pg.options.get("link_bytes_per_s", LINK_BYTES_PER_S))
        load = link_load_bytes_per_s(rate, f, n, step)
        if load <= budget:
            continue
        need = dark_frames_needed(rate, f, budget, step, sum(cfg.pair_frames()))
        fix = (f"expected dark_frames_between >= {need} (1 fresh frame in {need + 1})" if need is not None else
               "no duty cycle fits; expected a faster link or a lower slot rate")
        raise ConfigError(f"{_dark_frames_field(source, k, c)}: the uploads at {rate:g} slots/s need {load:.3g} B/s ({step} B "
                          f"per step, up to one step per fresh slot) but options.link_bytes_per_s is {budget:.3g} B/s; "
                          f"{fix}; got {n}")
    _check_duty_cycle(cfg, source)


def _check_duty_cycle(cfg: StationConfig, source: str) -> None:
    """Refuse a duty cycle that misses pairs or that the key-rate model misreads (review s36 lab2 H1):
    frame ``f`` is fresh iff ``f mod (n + 1) = 0`` (:meth:`labqfl.modulation.ModulationStreamer.scheduled_dark`)
    and belongs to the pair at schedule position ``f mod W`` (``W = Σ schedule weights``); with
    ``gcd(n + 1, W) > 1`` some positions never get a fresh frame (:func:`duty_cycle_aliases`). Clients with a
    duty cycle must share one ``n`` (:func:`fresh_frames_cycle` assumes one; with ``n = 2`` and ``9`` a pair's
    frames are fresh on both clients 1 in lcm(3, 10) = 30); ``n = 0`` (every frame fresh) mixes with any ``n``.
    The duty frame must be the schedule frame (``time_tagger.frame_slots = schedule.slots_per_frame``)."""
    w = sum(cfg.pair_frames())
    first: tuple[str, int] | None = None
    for k, c in enumerate(cfg.clients):
        pg, n = c.pattern_generator, _dark_frames(c.pattern_generator)
        if pg is None or n == 0:
            continue
        field = _dark_frames_field(source, k, c)
        if cfg.time_tagger.frame_slots != cfg.schedule.slots_per_frame:
            raise ConfigError(f"{field}: a duty cycle plays whole frames of time_tagger.frame_slots = "
                              f"{cfg.time_tagger.frame_slots} slots but the pairs take turns in frames of "
                              f"schedule.slots_per_frame = {cfg.schedule.slots_per_frame}; expected them equal; got {n}")
        if first is not None and n != first[1]:
            raise ConfigError(f"{field}: the clients' duty cycles differ ({first[0]} has {first[1]}), so a pair's "
                              f"frames are fresh on both clients only 1 in lcm({first[1] + 1}, {n + 1}); expected "
                              f"{first[1]} or 0 (every frame fresh); got {n}")
        first = first or (c.name, n)
        if duty_cycle_aliases(n, w):
            budget = float(pg.options.get("link_bytes_per_s", LINK_BYTES_PER_S))
            step = STREAMED_STEP_BYTES.get(pg.driver, 9)
            need = dark_frames_needed(cfg.laser.rep_rate_hz, cfg.time_tagger.frame_slots, budget, step) or 0
            m = nearest_duty_cycle(n, need, w)
            raise ConfigError(f"{field}: 1 fresh frame in {n + 1} shares the factor {math.gcd(n + 1, w)} with the "
                              f"pair schedule's {w}-frame cycle, so some pairs never get a fresh frame; expected n + 1 "
                              f"coprime to {w}, e.g. dark_frames_between = {m} (1 fresh frame in {m + 1}); got {n}")


def require_pattern_generators(cfg: StationConfig, source: str = "station") -> None:
    """Refuse to acquire when a client's randomness cannot reach its modulator: with a real time tagger,
    a client whose phase modulator cannot take per-slot levels on its own
    (``_PHASE_DRIVERS_NEEDING_A_GENERATOR``: the Keysight 33500B replays a fixed waveform; the bit-driven
    modulator takes its bits from a generator) needs a ``pattern_generator``; and with frame markers a Pulse
    Streamer must start on the master clock's first pulse (``options.trigger = "hardware"``). Called when an
    acquisition is built (:class:`labqfl.app.acquire.Acquisition`); ``station show``/``check`` still open such a
    station."""
    for k, c in enumerate(cfg.clients):
        pm = c.phase_modulator.driver
        pg = c.pattern_generator
        if (pg is not None and pg.driver == "SwabianPulseStreamer" and not cfg.time_tagger.simulated
                and cfg.time_tagger.marker_inputs() and "sync" not in cfg.time_tagger.conditional_filter_filtered
                and pg.options.get("trigger", "immediate") != "hardware"):
            raise ConfigError(f"{source}: field 'clients.{k}.pattern_generator.options.trigger': "
                              f"{pg.options.get('trigger', 'immediate')!r}; frames are numbered from slot 0, the master "
                              "clock's first pulse recorded by the tagger (decision 0008), so a generator started on its "
                              "first upload puts its frame markers off that frame grid and every frame is dropped; "
                              "expected \"hardware\" (its trigger input on the master clock's output)")
        why = _PHASE_DRIVERS_NEEDING_A_GENERATOR.get(pm)
        if why is not None and pg is None and not cfg.time_tagger.simulated:
            raise ConfigError(f"{source}: field 'clients.{k}.pattern_generator' (role {c.name}.pattern_generator): "
                              f"missing; {pm} ({c.name}.phase_modulator) {why}, so with a real "
                              "time tagger the client's per-slot randomness would never reach the modulator; expected "
                              "a pattern_generator (e.g. 'SwabianPulseStreamer') playing the client's frames")


def default_station_text() -> str:
    """TOML text of the embedded default station (the simulated four-client Sagnac testbed)."""
    return resources.files("labqfl.data").joinpath(DEFAULT_STATION_NAME).read_text(encoding="utf-8")


def load_station_config(path: str | Path | None = None) -> StationConfig:
    """Load and validate a station file; ``None`` gives the embedded default station."""
    if path is None:
        text, source = default_station_text(), f"<embedded {DEFAULT_STATION_NAME}>"
    else:
        p = Path(path)
        source = str(p)
        if not p.exists():
            raise ConfigError(f"{source}: station file not found; expected a TOML station file")
        if p.is_dir():
            raise ConfigError(f"{source}: is a directory; expected a TOML station file")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read station file ({exc.__class__.__name__}: {exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}; expected a TOML station file") from None
    return parse_station_config(data, source)


def station_to_toml_dict(cfg: StationConfig) -> dict[str, Any]:
    """Plain (TOML/JSON-safe) dict of the resolved config, ``None`` values dropped."""
    return cfg.model_dump(mode="json", exclude_none=True)
