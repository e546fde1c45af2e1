"""Instrument interfaces of the Sagnac testbed, with units.

Each role of the station is one of these. Each setting is declared here once, as a
:class:`~labqfl.instruments.settings.Setting` with its unit, doc and rule (validator); drivers and
simulated instruments say only how it reaches the instrument (SCPI strings, a getter/setter, or an
attribute) and may narrow a numeric range to their hardware's (:meth:`Setting.within`). So a value
is refused by the same rule, with the same one-line :class:`SettingError` (instrument, setting,
value, expected range), on hardware and in simulation. Settings that no implementation could leave
out are abstract until an implementation says how to read them.
"""

from __future__ import annotations

import math
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator

import numpy as np

from labqfl.errors import CalibrationError
from labqfl.instruments.base import Instrument, TagBlock
from labqfl.instruments.settings import (
    Rejected,
    Setting,
    boolean,
    channel_list,
    in_range,
    one_of,
    per_channel,
    rule,
)

#: The four-phase alphabet: index a ∈ {0,1,2,3} ↦ phase a·π/2. Basis X = {0, π} (a = 0, 2),
#: basis Y = {π/2, 3π/2} (a = 1, 3); bit = a // 2, basis = a % 2.
PHASE_ALPHABET_RAD = np.array([0.0, math.pi / 2, math.pi, 3 * math.pi / 2])
#: Clock sources of the instruments that take the station's shared 10 MHz reference.
REFERENCE_CLOCKS = ("internal", "external")
#: Lock points of a Mach–Zehnder bias controller (``manual``: hold ``bias_voltage_v``).
BIAS_MODES = ("null", "peak", "quad+", "quad-", "manual")


def _mean_photon_numbers(inst: object, value: object) -> list[float]:
    """Rule of ``IntensityModulator.levels``: 1 to 7 finite mean photon numbers >= 0."""
    try:
        vals = [float(x) for x in value]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise Rejected("a list of 1 to 7 mean photon numbers >= 0") from None
    if not 1 <= len(vals) <= 7:
        raise Rejected(f"1 to 7 mean photon numbers (codes 1..7), got {len(vals)}")
    for k, mu in enumerate(vals):
        if not math.isfinite(mu) or mu < 0:
            raise Rejected("a finite mean photon number >= 0", item=f"[{k}]", value=mu)
    return vals


class PulsedLaser(Instrument):
    """Pulsed laser of the central node."""

    output_enabled: Setting[bool] = Setting("", "emission on/off", validator=boolean())
    rep_rate_hz: Setting[float] = Setting("Hz", "pulse repetition rate", validator=in_range(1e3, 10e9, "Hz"))
    power_mw: Setting[float] = Setting("mW", "average output power", validator=in_range(0.0, 100.0, "mW"))
    wavelength_nm: Setting[float] = Setting("nm", "centre wavelength", validator=in_range(1260.0, 1650.0, "nm"))

    def safe_state(self) -> None:
        self.output_enabled = False


class PhaseModulator(Instrument):
    """Client phase modulator driven by an AWG/DAC.

    The client loads a per-slot pattern of phase indices (0..3, see :data:`PHASE_ALPHABET_RAD`);
    the drive voltage for phase φ is V = (φ − bias_phase) · Vπ/π.
    """

    output_enabled: Setting[bool] = Setting("", "drive output on/off", validator=boolean())
    v_pi_v: Setting[float] = Setting("V", "half-wave voltage used to compute drive levels",
                                     validator=in_range(0.0, 20.0, "V", lo_open=True))
    bias_phase_rad: Setting[float] = Setting("rad", "bias phase compensated in the drive levels",
                                             validator=in_range(-4 * math.pi, 4 * math.pi, "rad"))
    gate_delay_ps: Setting[float] = Setting("ps", "trigger delay placing the gate on this client's pulse",
                                            validator=in_range(-1e9, 1e9, "ps"))
    amplitude_vpp: Setting[float] = Setting("V", "peak-to-peak drive amplitude", validator=in_range(0.0, 40.0, "V"))

    @abstractmethod
    def load_pattern(self, phase_indices: np.ndarray) -> None:
        """Load a per-slot pattern of phase indices (uint8 in 0..3) played on each trigger."""

    @abstractmethod
    def set_dc_voltage(self, volts: float) -> None:
        """Apply a constant drive voltage [V] (used by the Vπ fringe calibration)."""

    def drive_voltage(self, phase_rad: float) -> float:
        """Drive voltage [V] for a phase [rad] with the current Vπ and bias."""
        return float((phase_rad - self.bias_phase_rad) * self.v_pi_v / math.pi)

    def safe_state(self) -> None:
        self.output_enabled = False


class VariableAttenuator(Instrument):
    """Variable optical attenuator setting a client's mean photon number."""

    #: Upper end of the attenuation range [dB] (the role's ``max_attenuation_db``, or the unit's).
    max_attenuation_db: float

    attenuation_db: Setting[float] = Setting("dB", "attenuation",
                                             validator=in_range(0.0, lambda s: s.max_attenuation_db, "dB"))
    shutter_closed: Setting[bool] = Setting("", "beam blocked", validator=boolean())
    wavelength_nm: Setting[float] = Setting("nm", "calibration wavelength", validator=in_range(1260.0, 1650.0, "nm"))

    def safe_state(self) -> None:
        self.shutter_closed = True


class IntensityModulator(Instrument):
    """Intensity modulator switching per slot between decoy levels."""

    output_enabled: Setting[bool] = Setting("", "modulation on/off", validator=boolean())
    levels: Setting[list[float]] = Setting("photons/pulse", "mean photon number per level",
                                           validator=rule(_mean_photon_numbers))

    @abstractmethod
    def load_pattern(self, level_indices: np.ndarray) -> None:
        """Load a per-slot pattern of level indices (uint8)."""

    def safe_state(self) -> None:
        self.output_enabled = False


class PhotonDetector(Instrument):
    """Single-photon detector (SNSPD free-running, or gated InGaAs SPAD)."""

    #: Highest operating bias and its unit (an SNSPD's bias current, a SPAD's bias voltage).
    max_bias: float
    bias_unit: str

    enabled: Setting[bool] = Setting("", "bias on / detector armed", validator=boolean())
    efficiency: Setting[float] = Setting("", "detection efficiency setting (SPADs) or nominal value",
                                         validator=in_range(0.0, 1.0, lo_open=True))
    bias: Setting[float] = Setting("µA or V", "bias current (SNSPD) or excess bias voltage (SPAD)",
                                   validator=in_range(0.0, lambda s: s.max_bias, lambda s: s.bias_unit))
    dead_time_ns: Setting[float] = Setting("ns", "dead time", validator=in_range(0.0, 1e5, "ns"))
    gated: Setting[bool] = Setting("", "gated mode", validator=boolean())
    gate_width_ns: Setting[float] = Setting("ns", "gate width", validator=in_range(0.0, 1e3, "ns", lo_open=True))
    gate_delay_ps: Setting[float] = Setting("ps", "gate delay relative to the trigger",
                                            validator=in_range(-1e9, 1e9, "ps"))
    temperature_k: Setting[float] = Setting("K", "sensor temperature", writable=False)
    #: Takes the light off this detector and returns the call that puts it back; set by the station
    #: (:func:`labqfl.station.light_off_switch`) for a bias reset of a latched nanowire, which must not ramp
    #: the bias up again under the flux that latched it (review s36 lab2 L2). None: nothing to switch.
    light_off: Callable[[], Callable[[], None]] | None = None

    @abstractmethod
    def count_rate_hz(self, integration_s: float = 0.1) -> float:
        """Counts per second integrated over ``integration_s`` seconds."""

    def safe_state(self) -> None:
        self.enabled = False


class TimeTagger(Instrument):
    """Time tagger: sync, detector and (optional) frame-marker channels, tags as int64 ps."""

    channels: Setting[list[int]] = Setting("", "enabled input channels",
                                           validator=channel_list(lambda s: s.input_channels()))
    trigger_levels_v: Setting[dict[int, float]] = Setting(
        "V", "trigger level per channel",
        validator=per_channel(in_range(-2.5, 2.5, "V"), lambda s: s.setting_channels()))
    input_delays_ps: Setting[dict[int, int]] = Setting(
        "ps", "software input delay per channel",
        validator=per_channel(in_range(-2_000_000, 2_000_000, "ps", round_to_int=True), lambda s: s.setting_channels()))
    resolution_ps: Setting[float] = Setting("ps", "timestamp resolution", writable=False)

    def input_channels(self) -> list[int]:
        """Channel numbers the tagger has (those ``channels`` may enable); default: the enabled ones."""
        return list(self.channels)

    def setting_channels(self) -> list[int]:
        """Channels whose per-channel settings (trigger level, delay) may be written: the enabled ones."""
        return list(self.channels)

    @abstractmethod
    def stream(self, duration_s: float, block_duration_s: float | None = None,
               on_recording: Callable[[], None] | None = None) -> Iterator[TagBlock]:
        """Acquire for ``duration_s`` seconds, yielding :class:`TagBlock` s as they arrive.
        ``on_recording``: called once, as soon as the tagger records and before its first block is
        read; an acquisition starts the master clock there, so that the clock's first pulse, slot 0
        (docs/decisions/0008-frame-markers.md), is recorded."""

    @abstractmethod
    def count_rates(self, integration_s: float = 0.1) -> dict[int, float]:
        """Counts per second on each enabled channel [Hz]."""

    @abstractmethod
    def histogram(
        self, start_channel: int, click_channel: int, binwidth_ps: int, n_bins: int, integration_s: float
    ) -> np.ndarray:
        """Start–stop histogram (int64 counts) of ``click_channel`` after ``start_channel``."""

    def overflows(self) -> int:
        """Overflows (blocks of tags lost for the data rate) since the last stream started; 0 for a
        tagger that cannot lose data. The lost stretches themselves travel with the stream as
        ``TagBlock.lost_intervals_ps``."""
        return 0

    def safe_state(self) -> None:
        """A time tagger has no hazardous state; stop any running measurement."""


class PowerMeter(Instrument):
    """Optical power meter."""

    wavelength_nm: Setting[float] = Setting("nm", "correction wavelength", validator=in_range(800.0, 1700.0, "nm"))
    averaging: Setting[int] = Setting("", "number of averaged samples", validator=in_range(1, 10000, integer=True))

    @abstractmethod
    def power_w(self) -> float:
        """Measured optical power [W]."""

    def place_at(self, position: str, confirm: Callable[[str], bool] | None = None) -> None:
        """Have the head measure at ``position``: ``"laser"`` (the laser's monitor tap) or a client
        name (that client's output towards the node). Used by the efficiency calibration.

        A real head cannot move itself: the default asks the operator to move the fibre and returns
        only once ``confirm(position)`` (a CLI prompt, a GUI dialog) says it was moved. Without
        ``confirm``, or when the operator does not confirm, it raises :class:`CalibrationError`:
        readings taken wherever the head happens to be would give any η (review s36 H2).
        Simulated meters switch their tap and need no confirmation.
        """
        where = "the laser's monitor tap" if position == "laser" else f"{position}'s output"
        self.log.warning("place the power-meter head at %s (calibration reference point)", where)
        if confirm is None:
            raise CalibrationError(f"efficiency needs the operator to move the power-meter head ({self.name}) to {where}; "
                                   "run `labqfl calibrate` interactively (a terminal, without --json): it asks to confirm")
        if not confirm(position):
            raise CalibrationError(f"the power-meter head was not confirmed at {where}; nothing was measured there")

    def safe_state(self) -> None:
        """A power meter has no hazardous state."""


# -- the modulation path of a client and the station's timing (issue 17) -------------------------

class ModulationFrame:
    """One frame of a client's modulation: per slot a phase index (0..3, :data:`PHASE_ALPHABET_RAD`)
    and an intensity index (into the client's ``intensities``), played after a frame-start marker.

    ``index`` is the frame's position on the playback time grid: frame ``f`` covers slots
    ``f·F … f·F + F − 1`` of the acquisition (F = slots per frame). A **dark** frame (``dark=True``,
    :meth:`dark_frame`) carries no choices: the generator plays no marker and holds the modulators at
    their dark level for it; the streamer uploads one when the client's next frame is not ready in
    time, and records the frame as lost. The phase indices carry key bits: ``repr`` shows only sizes.
    """

    __slots__ = ("index", "phase_idx", "intensity_idx", "dark")

    def __init__(self, index: int, phase_idx: np.ndarray, intensity_idx: np.ndarray, *, dark: bool = False) -> None:
        if isinstance(index, bool) or not isinstance(index, int | np.integer) or int(index) < 0:
            raise ValueError(f"frame index must be an integer >= 0, got {index!r}")
        p = np.ascontiguousarray(phase_idx, dtype=np.uint8)
        k = np.ascontiguousarray(intensity_idx, dtype=np.uint8)
        if p.ndim != 1 or p.shape != k.shape or p.size == 0:
            raise ValueError(f"a frame needs 1-D phase and intensity indices of equal, non-zero length; got shapes "
                             f"{p.shape} and {k.shape}")
        if not dark and p.size and int(p.max()) > 3:
            raise ValueError(f"phase indices must lie in 0..3, got {int(p.max())}")
        self.index = int(index)
        self.phase_idx = p
        self.intensity_idx = k
        self.dark = bool(dark)

    @classmethod
    def dark_frame(cls, index: int, n_slots: int) -> ModulationFrame:
        """A frame that plays nothing (no marker, modulators dark) in place of a late one."""
        z = np.zeros(int(n_slots), dtype=np.uint8)
        return cls(index, z, z, dark=True)

    @property
    def n_slots(self) -> int:
        return int(self.phase_idx.size)

    def __repr__(self) -> str:
        return f"ModulationFrame(index={self.index}, n_slots={self.n_slots}{', dark' if self.dark else ''})"


class PlayedFrames:
    """A client's played-frames record: frame index → played (True) or lost (False).

    Filled in playback order by :class:`labqfl.modulation.ModulationStreamer` from what the pattern
    generator reports; each frame is recorded once (a second verdict for the same frame raises
    ``ValueError``: a frame is never replayed). A frame is *played* only when the generator played
    it with the client's choices; a dark frame (the client was late), a frame lost to a generator
    underflow, and every frame not played when the stream stopped are *lost*. Only played frames'
    slots may enter the client's sifting (:meth:`slot_mask`).

    The streamer's feeder thread marks verdicts while others read (the Distiller, a client node, the
    GUI): every mark and every read holds the record's own lock, so a read sees the record as it was
    at one instant, never a verdict landing halfway through.
    """

    def __init__(self, frame_slots: int) -> None:
        if int(frame_slots) < 1:
            raise ValueError(f"frame_slots must be >= 1, got {frame_slots!r}")
        self.frame_slots = int(frame_slots)
        self._status: dict[int, bool] = {}
        self._lock = threading.Lock()

    def mark(self, index: int, played: bool) -> None:
        index = int(index)
        with self._lock:
            before = self._status.get(index)
            if before is None:
                self._status[index] = bool(played)
                return
        raise ValueError(f"frame {index} already recorded as {'played' if before else 'lost'}; a frame "
                         "is recorded once (never replayed)")

    def status(self, index: int) -> bool | None:
        """True (played), False (lost) or None (not yet recorded)."""
        with self._lock:
            return self._status.get(int(index))

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int | np.integer):
            return False
        with self._lock:
            return int(index) in self._status

    def __len__(self) -> int:
        with self._lock:
            return len(self._status)

    @property
    def played(self) -> list[int]:
        with self._lock:
            return sorted(i for i, p in self._status.items() if p)

    @property
    def lost(self) -> list[int]:
        with self._lock:
            return sorted(i for i, p in self._status.items() if not p)

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(frame indices int64, played bool), sorted by index (one consistent state of the record)."""
        with self._lock:
            items = sorted(self._status.items())
        return np.array([i for i, _ in items], dtype=np.int64), np.array([p for _, p in items], dtype=bool)

    def slot_mask(self, slots: np.ndarray) -> np.ndarray:
        """True for each slot (int64 acquisition slot index) that lies in a played frame."""
        s = np.asarray(slots, dtype=np.int64)
        idx, ok = self.as_arrays()
        frames = s // self.frame_slots
        pos = np.searchsorted(idx, frames)
        inside = pos < idx.size
        hit = np.zeros(s.shape, dtype=bool)
        hit[inside] = (idx[pos[inside]] == frames[inside]) & ok[pos[inside]]
        return hit


class PatternGenerator(Instrument):
    """A client's pattern generator: plays frames of per-slot (phase, intensity) levels continuously.

    Double-buffered playback: the generator holds ``buffers`` uploads (two on the instruments
    supported); while one plays the client uploads the next. Every upload carries its frames'
    indices (:class:`ModulationFrame`), consecutive from the frame :meth:`start` named: an upload
    out of order is refused. What was played is reported by :meth:`poll_played`; frames the
    generator could not play in their turn (an underflow) are reported lost and never played later.
    A frame-start marker is played on the marker output at the first slot of every non-dark frame.
    """

    output_enabled: Setting[bool] = Setting("", "outputs playing (False: outputs at their idle levels)",
                                            validator=boolean())
    slot_rate_hz: Setting[float] = Setting("Hz", "slot (pulse) rate of the patterns", writable=False)
    frame_slots: Setting[int] = Setting("", "slots per frame (one marker per frame)", writable=False)
    frames_per_upload: Setting[int] = Setting("", "frames carried by one upload (the unit of double buffering)",
                                              writable=False)
    reference_clock: Setting[str] = Setting("", "clock source: 'internal' or 'external' (the shared 10 MHz)",
                                            validator=one_of(REFERENCE_CLOCKS))
    #: Dark frames to play after every fresh one (a duty cycle for a generator whose link cannot carry
    #: fresh frames at the slot rate; :class:`labqfl.modulation.ClientStreams` passes it to its
    #: streamer). 0: every frame fresh. A driver sets it from its options.
    dark_frames_between: int = 0

    @abstractmethod
    def start(self, first_frame: int = 0) -> None:
        """Arm a new stream whose first upload carries frame ``first_frame``; playback begins when the
        first upload arrives (and the second is expected before the first ends)."""

    @abstractmethod
    def ready_for_upload(self) -> bool:
        """True when a buffer is free for the next upload."""

    @abstractmethod
    def upload(self, frames: list[ModulationFrame], *, last: bool = False) -> None:
        """Upload the next ``frames_per_upload`` frames (consecutive indices, continuing the stream);
        ``last``: the stream ends after them (no underflow at the end)."""

    @abstractmethod
    def poll_played(self) -> list[tuple[int, bool]]:
        """Frames whose fate became known since the last call, in order: (frame index, played)."""

    @abstractmethod
    def stop(self) -> list[tuple[int, bool]]:
        """End the stream, outputs to idle; returns the remaining verdicts (unplayed frames lost)."""

    def safe_state(self) -> None:
        self.output_enabled = False


class ModulatorBiasController(Instrument):
    """DC-bias controller of a Mach–Zehnder modulator: locks the bias at a point of the transfer curve
    (``"null"``: minimum transmission, ``"peak"``, ``"quad+"``, ``"quad-"``) with a dither loop, or
    holds a manual bias voltage (``"manual"``)."""

    output_enabled: Setting[bool] = Setting("", "bias output on/off", validator=boolean())
    mode: Setting[str] = Setting("", "lock point: null, peak, quad+, quad- or manual", validator=one_of(BIAS_MODES))
    bias_voltage_v: Setting[float] = Setting("V", "bias voltage (set in manual mode, read back otherwise)",
                                             validator=in_range(-10.0, 10.0, "V"))
    locked: Setting[bool] = Setting("", "the lock loop holds its point", writable=False)

    def safe_state(self) -> None:
        self.output_enabled = False


class PulseGenerator(Instrument):
    """The station's master clock: the trigger of the pulsed laser (one pulse per slot), disciplined by
    the shared 10 MHz reference that the pattern generators and the tagger also take."""

    output_enabled: Setting[bool] = Setting("", "trigger output on/off", validator=boolean())
    frequency_hz: Setting[float] = Setting("Hz", "trigger (laser repetition) rate",
                                           validator=in_range(0.0, 10e9, "Hz", lo_open=True))
    pulse_width_ns: Setting[float] = Setting("ns", "trigger pulse width", validator=in_range(0.0, 1e9, "ns", lo_open=True))
    reference_clock: Setting[str] = Setting("", "clock source: 'internal' or 'external' (the shared 10 MHz)",
                                            validator=one_of(REFERENCE_CLOCKS))

    def safe_state(self) -> None:
        self.output_enabled = False
