"""Instrument interfaces of the Sagnac testbed, with units.

Each role of the station is one of these. Settings are Python properties (read/write where the
hardware allows); out-of-range values raise ``ValueError`` naming the setting and the valid range.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterator
from typing import ClassVar

import numpy as np

from labqfl.instruments.base import Instrument, Setting, TagBlock

#: The four-phase alphabet: index a ∈ {0,1,2,3} ↦ phase a·π/2. Basis X = {0, π} (a = 0, 2),
#: basis Y = {π/2, 3π/2} (a = 1, 3); bit = a // 2, basis = a % 2.
PHASE_ALPHABET_RAD = np.array([0.0, math.pi / 2, math.pi, 3 * math.pi / 2])


class PulsedLaser(Instrument):
    """Pulsed laser of the central node."""

    SETTINGS = (
        Setting("output_enabled", "", "emission on/off"),
        Setting("rep_rate_hz", "Hz", "pulse repetition rate"),
        Setting("power_mw", "mW", "average output power"),
        Setting("wavelength_nm", "nm", "centre wavelength"),
    )

    output_enabled: bool
    rep_rate_hz: float
    power_mw: float
    wavelength_nm: float

    def safe_state(self) -> None:
        self.output_enabled = False


class PhaseModulator(Instrument):
    """Client phase modulator driven by an AWG/DAC.

    The client loads a per-slot pattern of phase indices (0..3, see :data:`PHASE_ALPHABET_RAD`);
    the drive voltage for phase φ is V = (φ − bias_phase) · Vπ/π.
    """

    SETTINGS = (
        Setting("output_enabled", "", "drive output on/off"),
        Setting("v_pi_v", "V", "half-wave voltage used to compute drive levels"),
        Setting("bias_phase_rad", "rad", "bias phase compensated in the drive levels"),
        Setting("gate_delay_ps", "ps", "trigger delay placing the gate on this client's pulse"),
        Setting("amplitude_vpp", "V", "peak-to-peak drive amplitude"),
    )

    output_enabled: bool
    v_pi_v: float
    bias_phase_rad: float
    gate_delay_ps: float
    amplitude_vpp: float

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

    SETTINGS = (
        Setting("attenuation_db", "dB", "attenuation"),
        Setting("shutter_closed", "", "beam blocked"),
        Setting("wavelength_nm", "nm", "calibration wavelength"),
    )

    attenuation_db: float
    shutter_closed: bool
    wavelength_nm: float

    def safe_state(self) -> None:
        self.shutter_closed = True


class IntensityModulator(Instrument):
    """Intensity modulator switching per slot between decoy levels."""

    SETTINGS = (
        Setting("output_enabled", "", "modulation on/off"),
        Setting("levels", "photons/pulse", "mean photon number per level"),
    )

    output_enabled: bool
    levels: list[float]

    @abstractmethod
    def load_pattern(self, level_indices: np.ndarray) -> None:
        """Load a per-slot pattern of level indices (uint8)."""

    def safe_state(self) -> None:
        self.output_enabled = False


class PhotonDetector(Instrument):
    """Single-photon detector (SNSPD free-running, or gated InGaAs SPAD)."""

    SETTINGS = (
        Setting("enabled", "", "bias on / detector armed"),
        Setting("efficiency", "", "detection efficiency setting (SPADs) or nominal value"),
        Setting("bias", "µA or V", "bias current (SNSPD) or excess bias voltage (SPAD)"),
        Setting("dead_time_ns", "ns", "dead time"),
        Setting("gated", "", "gated mode"),
        Setting("gate_width_ns", "ns", "gate width"),
        Setting("gate_delay_ps", "ps", "gate delay relative to the trigger"),
        Setting("temperature_k", "K", "sensor temperature", writable=False),
    )

    enabled: bool
    efficiency: float
    bias: float
    dead_time_ns: float
    gated: bool
    gate_width_ns: float
    gate_delay_ps: float

    @property
    @abstractmethod
    def temperature_k(self) -> float:
        """Measured detector temperature [K]."""

    @abstractmethod
    def count_rate_hz(self, integration_s: float = 0.1) -> float:
        """Counts per second integrated over ``integration_s`` seconds."""

    def safe_state(self) -> None:
        self.enabled = False


class TimeTagger(Instrument):
    """Time tagger: sync, detector and (optional) frame-marker channels, tags as int64 ps."""

    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("channels", "", "enabled input channels"),
        Setting("trigger_levels_v", "V", "trigger level per channel"),
        Setting("input_delays_ps", "ps", "software input delay per channel"),
        Setting("resolution_ps", "ps", "timestamp resolution", writable=False),
    )

    channels: list[int]
    trigger_levels_v: dict[int, float]
    input_delays_ps: dict[int, int]

    @property
    @abstractmethod
    def resolution_ps(self) -> float:
        """Timestamp bin [ps]."""

    @abstractmethod
    def stream(self, duration_s: float, block_duration_s: float | None = None) -> Iterator[TagBlock]:
        """Acquire for ``duration_s`` seconds, yielding :class:`TagBlock` s as they arrive."""

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

    SETTINGS = (
        Setting("wavelength_nm", "nm", "correction wavelength"),
        Setting("averaging", "", "number of averaged samples"),
    )

    wavelength_nm: float
    averaging: int

    @abstractmethod
    def power_w(self) -> float:
        """Measured optical power [W]."""

    def place_at(self, position: str) -> None:
        """Have the head measure at ``position``: ``"laser"`` (the laser's monitor tap) or a client
        name (that client's output towards the node). Used by the efficiency calibration.

        A real head cannot move itself: the default logs the request for the operator (who moves
        the fibre before confirming); simulated meters switch their tap.
        """
        self.log.warning("place the power-meter head at %r (calibration reference point)", position)

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
    """

    def __init__(self, frame_slots: int) -> None:
        if int(frame_slots) < 1:
            raise ValueError(f"frame_slots must be >= 1, got {frame_slots!r}")
        self.frame_slots = int(frame_slots)
        self._status: dict[int, bool] = {}

    def mark(self, index: int, played: bool) -> None:
        index = int(index)
        if index in self._status:
            raise ValueError(f"frame {index} already recorded as {'played' if self._status[index] else 'lost'}; a frame "
                             "is recorded once (never replayed)")
        self._status[index] = bool(played)

    def status(self, index: int) -> bool | None:
        """True (played), False (lost) or None (not yet recorded)."""
        return self._status.get(int(index))

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int | np.integer) and int(index) in self._status

    def __len__(self) -> int:
        return len(self._status)

    @property
    def played(self) -> list[int]:
        return sorted(i for i, p in self._status.items() if p)

    @property
    def lost(self) -> list[int]:
        return sorted(i for i, p in self._status.items() if not p)

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(frame indices int64, played bool), sorted by index."""
        idx = np.array(sorted(self._status), dtype=np.int64)
        return idx, np.array([self._status[int(i)] for i in idx], dtype=bool)

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

    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("output_enabled", "", "outputs playing (False: outputs at their idle levels)"),
        Setting("slot_rate_hz", "Hz", "slot (pulse) rate of the patterns", writable=False),
        Setting("frame_slots", "", "slots per frame (one marker per frame)", writable=False),
        Setting("frames_per_upload", "", "frames carried by one upload", writable=False),
        Setting("reference_clock", "", "clock source: 'internal' or 'external' (the shared 10 MHz)"),
    )

    output_enabled: bool
    reference_clock: str

    @property
    @abstractmethod
    def slot_rate_hz(self) -> float:
        """Slot rate [Hz]."""

    @property
    @abstractmethod
    def frame_slots(self) -> int:
        """Slots per frame."""

    @property
    @abstractmethod
    def frames_per_upload(self) -> int:
        """Frames per upload (an upload is the unit of double buffering)."""

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

    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("output_enabled", "", "bias output on/off"),
        Setting("mode", "", "lock point: null, peak, quad+, quad- or manual"),
        Setting("bias_voltage_v", "V", "bias voltage (set in manual mode, read back otherwise)"),
        Setting("locked", "", "the lock loop holds its point", writable=False),
    )

    output_enabled: bool
    mode: str
    bias_voltage_v: float

    @property
    @abstractmethod
    def locked(self) -> bool:
        """True when the controller reports its loop locked."""

    def safe_state(self) -> None:
        self.output_enabled = False


class PulseGenerator(Instrument):
    """The station's master clock: the trigger of the pulsed laser (one pulse per slot), disciplined by
    the shared 10 MHz reference that the pattern generators and the tagger also take."""

    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("output_enabled", "", "trigger output on/off"),
        Setting("frequency_hz", "Hz", "trigger (laser repetition) rate"),
        Setting("pulse_width_ns", "ns", "trigger pulse width"),
        Setting("reference_clock", "", "clock source: 'internal' or 'external' (the shared 10 MHz)"),
    )

    output_enabled: bool
    frequency_hz: float
    pulse_width_ns: float
    reference_clock: str

    def safe_state(self) -> None:
        self.output_enabled = False
