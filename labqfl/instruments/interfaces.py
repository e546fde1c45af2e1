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
