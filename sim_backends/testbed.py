"""The simulated Sagnac-loop testbed: a Monte-Carlo of laser, loop, clients, detectors and tagger.

Model (documented in docs/simulator.md):

* **Laser**: slot ``s`` (one pulse) is emitted at ``round(s·T)`` ps, T = 1/rep_rate. Timing jitter
  (rms) and pulse width (FWHM/2.355) add to the detectors' Gaussian jitter for photon clicks.
* **Schedule**: :class:`labqfl.contracts.schedule.PairSchedule`; in a frame of pair (Ci, Cj) client i
  modulates the clockwise pulse and client j the counter-clockwise one.
* **Clients**: each client's generator (:mod:`labqfl.sim_backends.qrng`: CSPRNG or seeded) writes
  its modulator drive pattern (intensity level k and phase index a per slot) for the slots of its
  pair's frames in every window, or, on the on-demand path (:attr:`SagnacTestbed.modulation_on_demand`;
  chosen where the thinning candidates are few, as on the default station), answers with those codes
  at the candidate slots only; the kernels read only these codes, never a client key. Mean photon
  numbers = config ``intensities`` × (laser power / configured power) × 10^(−(att − att_nom)/10)
  (0 with the shutter closed). Applied phase of index a:
  V = clip((aπ/2 − bias_set)·Vπ_set/π, ±amplitude/2), φ = πV/Vπ_true + φ0_true with
  Vπ_true = v_pi_v/(1 + v_pi_error) and φ0_true = config ``bias_phase_rad``.
* **Loop and splitter**: per-pair transmittances from :func:`labqfl.contracts.channel_model.transmittances`
  and click probabilities with exactly the formulas of
  :class:`labqfl.contracts.channel_model.PairChannel` (δ = φ_i − φ_j + θ, θ a random walk of strength
  ``phase_drift_rad_per_sqrt_s`` stepped every chunk of 65 536 slots).
* **Thinning**: per frame segment, candidate slots are drawn with geometric gaps at p_max and
  accepted with p/p_max, so the cost grows with detections, not pulses. Where one intensity level
  per client (its brightest, the decoy) sets p_max and lowering the other slots' rate saves at least
  :data:`_kernels.BRIGHT_MIN_GAIN` per slot, two rates instead: the dim slots (neither client at that
  level) at q_lo, their own bound, and the bright slots — found in the drive patterns 8 slots per
  word — at p_max (:func:`_kernels._segment_bright`; same click law). The default station runs the
  single rate: its p_max is 3.1–3.8 % and q_lo 1.6–1.8 % (a gain of 1.4–2.1 %, under the 5 % bound).
* **Detectors**: dark counts (Poisson in continuous time), gating, non-paralysable dead time,
  afterpulsing (probability per click, exponential delay after the dead time), Gaussian jitter.
  Photons from slot s reach the detectors at ``round(s·T) + τ_loop``, τ_loop = n·ΣL/c.
* **Time tagger**: tag = arrival + cable delay + input delay (+ jitter), floored to the
  resolution; a sync tag at ``round(s·T) + delay_sync`` for every ``sync_divider``-th slot.
* **Faults / adversary** from ``config.simulation``.
* **Emulated hardware** (``simulation.emulate_pattern_generators``, clients with a
  ``pattern_generator`` role): each such client's levels are what its emulated Pulse Streamer played
  (:class:`labqfl.sim_backends.pulse_streamer.EmulatedModulators`: the clients stream their own logs
  to the emulators through the real driver; the loop plays the emulators in virtual-time lockstep,
  window by window, and never reads those clients' logs); a slot they did not play is dark (μ = 0,
  an extra intensity index); a frame-marker input records a marker where the generator(s) wired to it
  played theirs: each client's own with ``time_tagger.marker_channels``, the AND of all clients' with
  ``marker_channel`` (docs/lab_setup.md). Real drivers of roles the loop models, opened by a Station next to
  this loop, are followed (:func:`labqfl.sim_backends.instruments.driver_follower`): the laser's output and
  power (:meth:`SagnacTestbed.follow_laser`) and a bit-driven modulator's amplifier output, gain and DC bias
  (:meth:`SagnacTestbed.follow_bit_modulator`: φ_a = π·(V_a + V_dc)/Vπ + φ0, one Vπ for both ports).

Parallel: in every block the 65 536-slot chunks of signal clicks (and the clients' answers on the
on-demand path, one task per client), then the two detectors, then the two halves of the final merge
run on ``threads`` threads (:mod:`labqfl.sim_backends._parallel`; on the on-demand path a window's finish and the
next window's start run as two flows on the same threads, with no barrier between their phases); all
randomness is counter-based per chunk or per slot/time, so the tags do not depend on the thread count.

Each call of :meth:`SagnacTestbed.stream` is one *acquisition* with its own epoch (0, 1, 2, …),
slots counted from 0; every client arms a fresh generator for it (a new CSPRNG key, or the seeded
stream of (seed, epoch)); the clients' logs of that acquisition are
``testbed.client_log(name)`` / ``testbed.client_logs()`` (the client's side; the physics never
reads them except through the drive patterns).
"""

from __future__ import annotations

import functools
import math
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from labqfl.sim_backends import _kernels as K
from labqfl.sim_backends import _parallel
from labqfl.sim_backends._parallel import Flow
from labqfl.sim_backends.pulse_streamer import (
    EmulatedLevels,
    EmulatedModulators,
    Wiring,
    emulator_at,
)
from labqfl.sim_backends.qrng import (
    ChoiceLog,
    derive_key,
    log_for_client,
    new_client_log,
)

from labqfl.config import StationConfig
from labqfl.contracts.channel_model import transmittances
from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import drive_codes
from labqfl.instruments.base import TagBlock
from labqfl.instruments.interfaces import PHASE_ALPHABET_RAD
from labqfl.physics import loop_delay_ps, photon_energy_j

CHUNK_SLOTS = 65536


def _bit_drive_v(pm: Any, gain_db: float | None = None) -> tuple[float, ...] | None:
    """RF drive per phase code of a phase modulator fed by the pattern generator's phase bits (role driver
    ``GenericBitDrivenPhaseModulator``): V_a = 10^(g/20)·(b0·w0 + b1·w1), b0 = a & 1, b1 = a >> 1, with the
    role's ``options.bit_levels_v`` = [w0, w1] (default [0.25, 0.5] V) and the gain g = ``gain_db`` (the
    driver's live GAIN, :meth:`SagnacTestbed.follow_bit_modulator`), else ``options.rf_gain_db`` (default:
    G·w0 = Vπ/2) — the driver's formula (drivers/bit_phase_modulator.py, tested equal)."""
    if pm.driver != "GenericBitDrivenPhaseModulator":
        return None
    w0, w1 = (float(x) for x in pm.options.get("bit_levels_v", (0.25, 0.5)))
    if gain_db is None:
        gain_db = pm.options.get("rf_gain_db")
    g = 10.0 ** (float(gain_db) / 20.0) if gain_db is not None else pm.v_pi_v / (2.0 * w0)
    return tuple(g * ((a & 1) * w0 + (a >> 1) * w1) for a in range(4))
#: Largest window simulated at once (64 chunks): bounds the clients' drive-pattern buffers
#: (one byte per client and slot); blocks longer than this are simulated in several windows.
WINDOW_SLOTS = 64 * CHUNK_SLOTS
#: Largest window on the on-demand path (:attr:`SagnacTestbed.modulation_on_demand`, 128 chunks: no
#: drive patterns, only the candidates): one window, hence one question per client over a node's
#: modulator link, per 50 ms tag block at 100 MHz instead of two.
WINDOW_SLOTS_ON_DEMAND = 128 * CHUNK_SLOTS
#: :attr:`SagnacTestbed.modulation_on_demand` = None takes the on-demand path when the largest
#: candidate rate of the active pairs (:meth:`SagnacTestbed.candidate_rate`) is at most this: its cost
#: grows with the candidates, the drive patterns' with the slots (docs/simulator.md, "Performance").
ON_DEMAND_MAX_RATE = 0.1
_INTERNAL_EPOCH_BASE = 1 << 32
_I64_MAX = int(np.iinfo(np.int64).max)


@dataclass
class ClientLive:
    """Live settings of one client's instruments (written by the simulated instruments)."""

    attenuation_db: float
    nominal_attenuation_db: float
    shutter_closed: bool = False
    pm_enabled: bool = True
    v_pi_set: float = 4.0
    bias_set: float = 0.0
    gate_delay_set_ps: float = 0.0
    gate_delay_true_ps: float = 0.0
    gate_tolerance_ps: float = 500.0
    amplitude_vpp: float = 16.0
    dc_volts: float | None = None
    pattern: np.ndarray | None = None
    #: RF drive [V] per phase code 0..3 of a modulator fed by the pattern generator's phase bits
    #: (role driver GenericBitDrivenPhaseModulator); None: the drive formula of an AWG-driven modulator
    bit_drive_v: tuple[float, ...] | None = None
    #: that modulator's DC bias port [V] (its driver's BIAS:VOLT), added to the RF drive of every code
    bias_port_v: float = 0.0


@dataclass
class DetectorLive:
    enabled: bool
    efficiency: float
    bias: float
    bias_nominal: float
    bias_scale: float
    dark_count_rate_hz: float
    dead_time_ns: float
    afterpulse_prob: float
    afterpulse_decay_ns: float
    jitter_ps: float
    gated: bool
    gate_width_ns: float
    gate_delay_ps: float

    def dcr_hz(self) -> float:
        """Dark-count rate at the current bias (:func:`dark_count_rate_at`)."""
        return dark_count_rate_at(self.dark_count_rate_hz, self.bias, self.bias_nominal, self.bias_scale)


def drift_step(loop: Any, chunk_s: float) -> tuple[float, float]:
    """(σ, ρ) of one chunk of ``chunk_s`` seconds of the loop phase θ_m = ρ·θ_{m−1} + σ·N_m
    (:func:`labqfl.sim_backends._kernels.drift_phase`): σ_c√Δ and ρ = 1 for the random walk;
    with a correlation time τ the Ornstein–Uhlenbeck step, ρ = e^(−Δ/τ), σ = σ_c·√(τ(1 − ρ²)/2)."""
    sigma_c = float(loop.phase_drift_rad_per_sqrt_s)
    tau = loop.phase_drift_correlation_s
    if tau is None:
        return sigma_c * math.sqrt(chunk_s), 1.0
    rho = math.exp(-chunk_s / tau)
    return sigma_c * math.sqrt(tau * -math.expm1(-2.0 * chunk_s / tau) / 2.0), rho


def dark_bias_scale(d: Any) -> float:
    """The bias scale of detector config ``d``'s dark-count law: ``options.dark_bias_scale``, default 1 µA for
    an SNSPD, 0.5 V otherwise."""
    return float(d.options.get("dark_bias_scale", 1.0 if d.kind == "snspd" else 0.5))


def dark_count_rate_at(dcr0_hz: float, bias: float, bias_nominal: float, scale: float) -> float:
    """Dark-count rate [Hz] of a detector biased at ``bias``: DCR₀·exp((bias − bias₀)/scale)."""
    return dcr0_hz * math.exp((bias - bias_nominal) / scale)


@dataclass
class LiveState:
    """Everything the instruments can change; the physics reads it at every block."""

    laser_on: bool
    power_mw: float
    rep_rate_hz: float
    wavelength_nm: float
    clients: dict[str, ClientLive]
    detectors: dict[str, DetectorLive]
    enabled_channels: set[int]
    input_delays_ps: dict[int, int]
    trigger_levels_v: dict[int, float]
    pairs: list[tuple[str, str]] | None = None
    version: int = 0


@dataclass
class _Acq:
    """State of one acquisition carried across blocks."""

    epoch: int
    period_ps: float
    n_slots: int
    keys: dict[str, np.uint64]
    delays: dict[str, int]  # total delay slot-emission → tag per channel name, without jitter
    channels: dict[str, int]
    res_ps: int
    cut_margin: int
    drift_state: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0]))
    # detector rows D0, D1: [dead_until, n_pending] and pending afterpulse times
    det_state: np.ndarray = field(default_factory=lambda: np.array([[np.iinfo(np.int64).min, 0]] * 2, dtype=np.int64))
    det_pend: np.ndarray = field(default_factory=lambda: np.zeros((2, K.PEND_CAP), dtype=np.int64))
    cap_sig: int = 4096  # signal clicks per chunk row
    cap_cand: int = 4096  # candidate slots per chunk row (modulation on demand)
    logs: list[ChoiceLog] = field(default_factory=list)  # the clients' generators (client order)
    # per-thread caches of geometric-gap tables (thread, pair)
    guide_q: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    guide_lo: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 1), dtype=np.int64))
    guide_hi: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 1), dtype=np.int64))
    # tags generated for earlier windows that fall after the last block's cut
    carry_t: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    carry_c: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    windows_started: int = 0  # on-demand windows begun: two in flight use alternate candidate buffers
    on_demand: bool = False  # this acquisition's path (SagnacTestbed.on_demand_for)

    def buffer(self, name: str, shape: tuple[int, int], dtype: type) -> np.ndarray:
        """A scratch array of exactly ``shape``, C-contiguous, its memory reused across windows (a view of
        a flat buffer that grows when needed). Contiguous whatever the shape: a kernel's argument of
        another layout is another Numba specialisation, compiled when it first occurs — until
        2026-12-05 a slice of a wider buffer made ``detector_window`` compile its non-contiguous variant
        in the optics node mid-acquisition on a cold cache (the launcher's warm-up had met only fresh,
        contiguous buffers)."""
        n = shape[0] * shape[1]
        b = self.buffers.get(name)
        if b is None or b.size < n:
            b = self.buffers[name] = np.empty(n, dtype=dtype)
        return b[:n].reshape(shape)


@dataclass
class _Scratch:
    """What a finished acquisition leaves to the next one of the same testbed: its scratch buffers
    (:meth:`_Acq.buffer`, their row capacities) and its threads' geometric-gap tables (a function of their
    rate only, which the kernels check before using one). Every output is the same with or without it; it
    saves each acquisition the first-touch page faults of ≈ 10 MB of buffers and the tables' logarithms
    (the benchmark's acquisitions last 1 s: ≈ 800 page faults and 6 pairs × threads × 8192 logarithms each).
    Taken by one acquisition at a time (:meth:`SagnacTestbed._new_acq`): two at once never share one. A testbed
    keeps at most two between acquisitions: ≈ 11 MB each on the default station's on-demand path, ≈ 21 MB where
    the drive patterns' buffer (a byte per client and slot of a window) is among them."""

    buffers: dict[str, np.ndarray]
    cap_sig: int
    cap_cand: int
    guide_q: np.ndarray
    guide_lo: np.ndarray
    guide_hi: np.ndarray

    @classmethod
    def of(cls, acq: _Acq) -> _Scratch:
        return cls(acq.buffers, acq.cap_sig, acq.cap_cand, acq.guide_q, acq.guide_lo, acq.guide_hi)

    def give(self, acq: _Acq) -> None:
        acq.buffers = self.buffers
        acq.cap_sig, acq.cap_cand = self.cap_sig, self.cap_cand
        acq.guide_q, acq.guide_lo, acq.guide_hi = self.guide_q, self.guide_lo, self.guide_hi


_EMPTY_T = np.zeros(0, dtype=np.int64)


def _done(value: Any) -> Flow[Any]:
    """A flow (:func:`_parallel.run_flows`) without a phase that returns ``value``."""
    return value
    yield  # a generator


def _merge(srcs: list[np.ndarray], carry_c: np.ndarray, ch0: np.int16, ch1: np.int16, chs: np.int16,
           threads: int) -> Flow[tuple[np.ndarray, np.ndarray]]:
    """Merge the sorted streams carry, D0, D1, sync (:func:`_kernels.merge_tags`, ties in that
    order); with threads > 1 the two halves before and after a split time are merged in parallel
    (a flow, :mod:`._parallel`)."""
    n = sum(x.size for x in srcs)
    out_t = np.empty(n, dtype=np.int64)
    out_c = np.empty(n, dtype=np.int16)
    parts = [(0, [0] * 4, [x.size for x in srcs])]
    big = max(srcs, key=lambda x: x.size)
    if threads > 1 and n > 20_000:
        t_split = big[big.size // 2]
        cut = [int(np.searchsorted(x, t_split, side="left")) for x in srcs]
        parts = [(0, [0] * 4, cut), (sum(cut), cut, [x.size for x in srcs])]

    def merge_part(task: int, slot: int) -> None:
        o, lo, hi = parts[task]
        m = sum(hi) - sum(lo)
        K.merge_tags(srcs[0][lo[0]:hi[0]], carry_c[lo[0]:hi[0]], srcs[1][lo[1]:hi[1]], ch0,
                     srcs[2][lo[2]:hi[2]], ch1, srcs[3][lo[3]:hi[3]], chs, out_t[o:o + m], out_c[o:o + m])

    yield len(parts), merge_part
    return out_t, out_c


def _round_ps(x: float) -> int:
    return int(math.floor(x + 0.5))


class SagnacTestbed:
    """Monte-Carlo model of the whole station; shared by the simulated instruments.

    Parameters come from ``config`` (the simulator's truth); live instrument settings are in
    :attr:`live` and are read at the start of every block (timing settings — repetition rate,
    tagger delays, resolution — at the start of every acquisition).
    """

    #: False: each window reads the clients' drive patterns over all its slots (in process);
    #: True: it draws the candidate slots first and asks each client's log for its choices in
    #: those slots only (``choices(slots)``), as the optical layer of separate client nodes does
    #: (:mod:`labqfl.nodes.optics`); the tags are the same either way. None (the default): chosen
    #: per acquisition by :meth:`on_demand_for` — on demand where the candidates are at most
    #: :data:`ON_DEMAND_MAX_RATE` of the slots (the cheaper path there), drive patterns elsewhere
    #: and always with emulated pattern generators.
    modulation_on_demand: bool | None = None

    def __init__(self, config: StationConfig, threads: int | None = None) -> None:
        self.config = config.model_copy(deep=True)
        self.threads = threads
        self.lock = threading.RLock()
        cfg = self.config
        self.live = LiveState(
            laser_on=True, power_mw=cfg.laser.power_mw, rep_rate_hz=cfg.laser.rep_rate_hz,
            wavelength_nm=cfg.laser.wavelength_nm,
            clients={
                c.name: ClientLive(
                    attenuation_db=float(c.attenuator.options.get("nominal_attenuation_db", min(50.0, c.attenuator.max_attenuation_db))),
                    nominal_attenuation_db=float(c.attenuator.options.get("nominal_attenuation_db", min(50.0, c.attenuator.max_attenuation_db))),
                    v_pi_set=c.phase_modulator.v_pi_v,
                    bias_set=float(c.phase_modulator.options.get("bias_setting_rad", 0.0)),
                    gate_delay_set_ps=c.phase_modulator.gate_delay_ps,
                    gate_delay_true_ps=float(c.phase_modulator.options.get("true_gate_delay_ps", c.phase_modulator.gate_delay_ps)),
                    gate_tolerance_ps=float(c.phase_modulator.options.get("gate_tolerance_ps", 500.0)),
                    amplitude_vpp=float(c.phase_modulator.options.get("amplitude_vpp", 4.0 * c.phase_modulator.v_pi_v)),
                    bit_drive_v=_bit_drive_v(c.phase_modulator),
                )
                for c in cfg.clients
            },
            detectors={
                n: DetectorLive(
                    enabled=True, efficiency=d.efficiency, bias=d.bias_current_ua, bias_nominal=d.bias_current_ua,
                    bias_scale=dark_bias_scale(d),
                    dark_count_rate_hz=d.dark_count_rate_hz, dead_time_ns=d.dead_time_ns,
                    afterpulse_prob=d.afterpulse_prob, afterpulse_decay_ns=d.afterpulse_decay_ns,
                    jitter_ps=d.jitter_ps, gated=d.gated, gate_width_ns=d.gate_width_ns, gate_delay_ps=d.gate_delay_ps,
                )
                for n, d in cfg.detectors.items()
            },
            enabled_channels={cfg.time_tagger.sync_channel, *cfg.time_tagger.detector_channels.values(),
                              *cfg.time_tagger.marker_inputs().values()},
            input_delays_ps={self.channel_of(n): int(round(v)) for n, v in cfg.time_tagger.input_delays_ps.items()},
            trigger_levels_v={ch: cfg.time_tagger.trigger_level_v
                              for ch in [cfg.time_tagger.sync_channel, *cfg.time_tagger.detector_channels.values()]},
        )
        self._eta = {p: transmittances(cfg, *p) for p in cfg.pairs()}
        self._dark_index: dict[str, int] = {}  # emulated clients: the intensity index of a dark slot (μ = 0)
        base = cfg.simulation.qrng_epoch_base
        # Fresh per testbed unless pinned: repeated client choices would repeat raw keys.
        # Random bases are >= 2^34, clear of the internal read-out epochs [2^32, 2^33).
        self._epoch = base if base is not None else (secrets.randbits(24) + 1) << 34
        self.epoch_base = self._epoch
        self._internal_epoch = 0
        self.last_epoch: int | None = None
        self._client_index = {c.name: k for k, c in enumerate(cfg.clients)}
        # the clients' own generators per acquisition epoch (the client side of the simulation)
        self._logs: dict[int, dict[str, ChoiceLog]] = {}
        self._cache_version = -1
        self._cache: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] = ({}, {})
        # scratch of finished acquisitions, handed to the next one (_new_acq, _keep_scratch)
        self._scratch: list[_Scratch] = []
        #: the clients' emulated pattern generators (None: every client's choices drive the loop directly)
        self.hardware: EmulatedModulators | None = self._emulated_generators()

    def _emulated_generators(self) -> EmulatedModulators | None:
        """With ``simulation.emulate_pattern_generators``, clients with a ``pattern_generator`` role drive the
        loop by what their emulated Pulse Streamers play. Each role's resource must be a loopback address,
        where the emulator of this process listens (:func:`labqfl.sim_backends.pulse_streamer.emulator_at`):
        a simulated loop cannot see the light of a real instrument."""
        cfg = self.config
        pgs = {c.name: c for c in cfg.clients if c.pattern_generator is not None}
        if not pgs or not cfg.simulation.emulate_pattern_generators:
            return None
        period = 1e9 / cfg.laser.rep_rate_hz
        if abs(period - round(period)) > 1e-6 or round(period) < 2:
            raise ValueError(f"laser.rep_rate_hz = {cfg.laser.rep_rate_hz:g} Hz: emulated Pulse Streamers play integer "
                             "ns slots >= 2 ns; expected 1 GHz / n")
        ems, levels = {}, {}
        for name, cc in pgs.items():
            pg = cc.pattern_generator
            assert pg is not None
            ip = (pg.resource or "").strip()
            if pg.driver != "SwabianPulseStreamer":
                raise ValueError(f"{name}.pattern_generator: the simulated loop emulates a SwabianPulseStreamer only; "
                                 f"got driver {pg.driver!r}")
            try:
                ems[name] = emulator_at(ip)
            except ValueError as exc:
                raise ValueError(f"{name}.pattern_generator: resource {ip!r}: {exc} (the simulated loop cannot see "
                                 "a real instrument's light; use a simulated-free station for real pattern generators)") from None
            kk = len(cc.intensities)
            dark = kk if kk < K.K_MAX else (cc.intensities.index(0.0) if 0.0 in cc.intensities else -1)
            if dark < 0:
                raise ValueError(f"client {name}: {kk} intensities leave no index for a dark slot; expected fewer than "
                                 f"{K.K_MAX} or one of them 0.0")
            self._dark_index[name] = dark
            levels[name] = EmulatedLevels(name, Wiring.from_options(pg.options), kk, dark)
        return EmulatedModulators(ems, levels, slot_ns=int(round(period)))

    # -- small helpers ---------------------------------------------------------------------
    @property
    def threads(self) -> int | None:
        """Threads of the Monte-Carlo (chunks of slots and the two detectors run in parallel);
        None = every core this process may use. The tags do not depend on it."""
        return self._threads

    @threads.setter
    def threads(self, n: int | None) -> None:
        if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            raise ValueError(f"threads must be None or an integer >= 1, got {n!r}")
        self._threads = None if n is None else min(n, _parallel.MAX_THREADS)

    def _n_threads(self) -> int:
        return _parallel.default_threads() if self._threads is None else self._threads

    def follow_laser(self, on: bool, power_mw: float) -> None:
        """The laser's live state as its real driver set it (output on/off, average power [mW]); the clients'
        mean photon numbers scale with the power (module docstring). Called by the Station's follower of a real
        laser next to this loop (:func:`labqfl.sim_backends.instruments.driver_follower`)."""
        with self.lock:
            self.live.laser_on = bool(on)
            self.live.power_mw = float(power_mw)
            self.live.version += 1

    def follow_bit_modulator(self, client: str, *, output_enabled: bool, gain_db: float, dc_volts: float) -> None:
        """``client``'s phase modulator fed by its pattern generator's phase bits as its real driver set it:
        the RF amplifier's output (off: no RF drive), its gain (the drive per code,
        :func:`_bit_drive_v`) and the DC bias port voltage. The phase of code a is then
        φ_a = π·(V_a + V_dc)/Vπ + φ0 (Saleh & Teich, *Fundamentals of Photonics*, §20.1), with one Vπ for
        the RF and the DC port: a single-electrode modulator whose DC bias reaches the electrode through a
        bias tee (a modulator with a separate DC electrode has its own, usually larger, DC Vπ)."""
        cc = self.config.client(client)
        drive = _bit_drive_v(cc.phase_modulator, gain_db)
        if drive is None:
            raise ValueError(f"{client}.phase_modulator is not fed by its pattern generator's phase bits "
                             f"(driver {cc.phase_modulator.driver!r}); nothing to follow")
        with self.lock:
            cl = self.live.clients[client]
            cl.pm_enabled = bool(output_enabled)
            cl.bit_drive_v = drive
            cl.bias_port_v = float(dc_volts)
            self.live.version += 1

    def touch(self) -> None:
        """Mark the live state as changed (instruments call this after writing a setting)."""
        with self.lock:
            self.live.version += 1

    def channel_of(self, name: str) -> int:
        """Tagger channel of 'sync', 'D0' or 'D1' (or the number itself as a string)."""
        tt = self.config.time_tagger
        if name == "sync":
            return tt.sync_channel
        if name in tt.detector_channels:
            return tt.detector_channels[name]
        if name in tt.marker_inputs():
            return tt.marker_inputs()[name]
        try:
            return int(name)
        except ValueError:
            raise ValueError(f"unknown tagger channel name {name!r}; expected 'sync', 'D0', 'D1' or a number") from None

    @property
    def loop_delay_ps(self) -> float:
        """Propagation time around the whole loop τ_loop = n·ΣL/c [ps] (same for CW and CCW)."""
        return loop_delay_ps(self.config.loop)

    def true_delays_ps(self) -> dict[str, int]:
        """Delay from a slot's emission to its tag, per channel name, without jitter [ps]:
        sync = cable + input delay; D0/D1 = τ_loop + cable + input delay (simulator truth)."""
        tt = self.config.time_tagger
        with self.lock:
            ind = dict(self.live.input_delays_ps)
        out = {"sync": _round_ps(tt.cable_delays_ps.get("sync", 0.0)) + ind.get(tt.sync_channel, 0)}
        for d, ch in tt.detector_channels.items():
            out[d] = _round_ps(self.loop_delay_ps + tt.cable_delays_ps.get(d, 0.0)) + ind.get(ch, 0)
        for name, ch in tt.marker_inputs().items():  # frame-start markers of the pattern generators: cable + input delay
            out[name] = _round_ps(tt.cable_delays_ps.get(name, 0.0)) + ind.get(ch, 0)
        return out

    def client_log(self, client: str, epoch: int | None = None) -> ChoiceLog:
        """``client``'s own modulation log for acquisition ``epoch`` (default: the last one): the
        generator it armed for that acquisition. A seeded client's log of any epoch can be rebuilt;
        a CSPRNG client's exists only for acquisitions of this testbed."""
        cc = self.config.client(client)
        with self.lock:
            e = self.last_epoch if epoch is None else epoch
            if e is None:
                e = self.epoch_base
            got = self._logs.get(e, {}).get(client)
        if got is not None:
            return got
        if cc.randomness == "seeded":
            return log_for_client(cc, e)
        raise ValueError(f"client {client!r} ({cc.randomness}) has no log for acquisition epoch {e} in this "
                         "testbed; its choices exist only for acquisitions it took part in")

    def client_logs(self, epoch: int | None = None) -> dict[str, ChoiceLog]:
        """Every client's log of acquisition ``epoch`` (default: the last one), by name."""
        return {c: self.client_log(c, epoch) for c in self.config.client_names}

    def restrict_pairs(self, pairs: list[tuple[str, str]] | None) -> None:
        """Run only these pairs (in this order) instead of the configured schedule; None restores it."""
        with self.lock:
            if pairs is not None:
                names = self.config.client_names
                order = {n: k for k, n in enumerate(names)}
                fixed: list[tuple[str, str]] = []
                for a, b in pairs:
                    if a not in order or b not in order or a == b:
                        raise ValueError(f"pair ({a}, {b}) must name two different clients from {names}")
                    fixed.append((a, b) if order[a] < order[b] else (b, a))
                self.live.pairs = fixed
            else:
                self.live.pairs = None
            self.live.version += 1

    def active_pairs(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.live.pairs) if self.live.pairs is not None else self.config.pairs()

    # -- physics parameters of one block ---------------------------------------------------
    def _client_arrays(self) -> dict[str, np.ndarray]:
        cfg, live = self.config, self.live
        nc = len(cfg.clients)
        mu = np.zeros((nc, K.K_MAX))
        phase = np.zeros((nc, K.N_PHASE))
        pmode = np.zeros(nc, dtype=np.int64)
        fixk0 = np.zeros(nc, dtype=np.uint8)
        cnk = np.zeros(nc, dtype=np.int64)
        pats: list[np.ndarray] = []
        pat_off = np.zeros(nc, dtype=np.int64)
        pat_len = np.ones(nc, dtype=np.int64)
        off = 0
        power_scale = (live.power_mw / cfg.laser.power_mw) if live.laser_on else 0.0
        for c, cc in enumerate(cfg.clients):
            cl = live.clients[cc.name]
            scale = 0.0 if cl.shutter_closed else power_scale * 10.0 ** (-(cl.attenuation_db - cl.nominal_attenuation_db) / 10.0)
            kk = len(cc.intensities)
            cnk[c] = max(kk, self._dark_index.get(cc.name, -1) + 1)  # an emulated client's dark slots: μ = 0
            mu[c, :kk] = np.asarray(cc.intensities) * scale
            pmc = cc.phase_modulator
            vpi_true = pmc.v_pi_v / (1.0 + pmc.v_pi_error)
            phi0 = pmc.bias_phase_rad
            half = cl.amplitude_vpp / 2.0
            for a in range(4):
                if cl.bit_drive_v is not None:  # the phase bits through combiner and amplifier, plus the DC port
                    v = (cl.bit_drive_v[a] if cl.pm_enabled else 0.0) + cl.bias_port_v  # amplifier off: no RF
                else:
                    v = (PHASE_ALPHABET_RAD[a] - cl.bias_set) * cl.v_pi_set / math.pi
                    v = min(max(v, -half), half)
                phase[c, a] = math.pi * v / vpi_true + phi0
            gate_miss = abs(cl.gate_delay_set_ps - cl.gate_delay_true_ps) > cl.gate_tolerance_ps
            if cl.bit_drive_v is not None:
                pass  # the pattern generator's codes pick the phases above (its amplifier off: all alike)
            elif not cl.pm_enabled or gate_miss:
                pmode[c] = 1
                phase[c, 4] = phi0
            elif cl.dc_volts is not None:
                pmode[c] = 1
                fixk0[c] = 1
                v = min(max(cl.dc_volts, -half), half)
                phase[c, 4] = math.pi * v / vpi_true + phi0
            elif cl.pattern is not None and cl.pattern.size:
                pmode[c] = 2
                pats.append(cl.pattern)
                pat_off[c] = off
                pat_len[c] = cl.pattern.size
                off += cl.pattern.size
        pat = np.concatenate(pats).astype(np.uint8) if pats else np.zeros(1, dtype=np.uint8)
        return {"mu": mu, "phase": phase, "pmode": pmode, "fixk0": fixk0, "cnk": cnk,
                "pat": pat, "pat_off": pat_off, "pat_len": pat_len}

    def _pair_arrays(self) -> dict[str, np.ndarray]:
        pairs = self.live.pairs if self.live.pairs is not None else self.config.pairs()
        idx = self._client_index
        etas = []
        for p in pairs:
            if p not in self._eta:
                self._eta[p] = transmittances(self.config, *p)
            etas.append(self._eta[p])
        # the schedule's cycle (weights from the station; a live override of the pairs: one frame each)
        frames = self.config.pair_frames() if self.live.pairs is None else None
        return {"frame_pair": PairSchedule(list(pairs), self.config.schedule.slots_per_frame, frames).frame_pair,
                "ci": np.array([idx[a] for a, _ in pairs], dtype=np.int64),
                "cj": np.array([idx[b] for _, b in pairs], dtype=np.int64),
                "eta_cw": np.array([e[0] for e in etas]), "eta_ccw": np.array([e[1] for e in etas])}

    # -- acquisition -----------------------------------------------------------------------
    def _new_acq(self, epoch: int, n_slots: int, logs: dict[str, ChoiceLog]) -> _Acq:
        cfg = self.config
        seed = cfg.simulation.seed
        # The channel/detector randomness is seeded by the acquisition's index within this testbed
        # (reproducible from simulation.seed); only the clients' QRNG uses the (possibly random)
        # epoch, so their choices never repeat across testbeds.
        chan_epoch = epoch - self.epoch_base if self.epoch_base <= epoch < self.epoch_base + (1 << 32) else epoch
        keys = {name: np.uint64(derive_key(seed, chan_epoch, sid)) for sid, name in enumerate(
            ["gap", "acc", "eve", "drift", "dark_D0", "dark_D1", "jit_D0", "jit_D1", "ap_D0", "ap_D1", "sync",
             "gap_bright"])}
        with self.lock:
            period = 1e12 / self.live.rep_rate_hz
            delays = self.true_delays_ps()
            chans = {"sync": cfg.time_tagger.sync_channel, **cfg.time_tagger.detector_channels}
            jit = max(d.jitter_ps for d in self.live.detectors.values())
        res = max(1, int(round(cfg.time_tagger.resolution_ps)))
        sig_extra = math.hypot(cfg.laser.timing_jitter_ps, cfg.laser.pulse_width_ps / 2.3548)
        margin = int(math.ceil(math.hypot(jit, sig_extra) * K.GAUSS_TABLE_MAX)) + res + 2
        acq = _Acq(epoch=epoch, period_ps=period, n_slots=n_slots, keys=keys, delays=delays, channels=chans,
                   res_ps=res, cut_margin=margin)
        acq.logs = [logs[c.name] for c in cfg.clients]
        with self.lock:
            kept = self._scratch.pop() if self._scratch else None
        if kept is not None:
            kept.give(acq)
        return acq

    def _keep_scratch(self, acq: _Acq) -> None:
        """An acquisition's scratch (:class:`_Scratch`) kept for the next one, once it has ended."""
        with self.lock:
            if len(self._scratch) < 2:
                self._scratch.append(_Scratch.of(acq))

    @staticmethod
    def _client_runs(s0: int, s1: int, pa: dict[str, np.ndarray], frame: int) -> dict[int, list[list[int]]]:
        """Per client index, the runs [lo, hi) of the slots of [s0, s1) in the frames of its pairs
        (consecutive frames of its pairs joined), ascending."""
        cycle = pa["frame_pair"]
        runs: dict[int, list[list[int]]] = {}
        for f in range(s0 // frame, (s1 - 1) // frame + 1):
            lo, hi = max(s0, f * frame), min(s1, (f + 1) * frame)
            p = int(cycle[f % cycle.size])
            for c in (int(pa["ci"][p]), int(pa["cj"][p])):
                r = runs.setdefault(c, [])
                if r and r[-1][1] == lo:
                    r[-1][1] = hi
                else:
                    r.append([lo, hi])
        return runs

    def _drive_patterns(self, acq: _Acq, s0: int, s1: int, pa: dict[str, np.ndarray],
                        frame: int) -> Flow[np.ndarray]:
        """Each client's drive pattern (k·4 + a per slot) over the frames of [s0, s1) where its pair
        is scheduled, written by the client's own generator: what the clients stream to their
        modulators. Rows are indexed by s − s0; slots outside a client's frames are not written
        (and never read)."""
        runs = self._client_runs(s0, s1, pa, frame)
        # rows padded to whole 8-slot words: the signal kernel scans them 8 slots at a time
        codes = acq.buffer("codes", (len(acq.logs), -(-(s1 - s0) // 8) * 8), np.uint8)
        work = [(c, lo, hi) for c, rs in runs.items() for lo, hi in rs]

        def fill(task: int, slot: int) -> None:
            c, lo, hi = work[task]
            acq.logs[c].fill_codes(lo, codes[c, lo - s0:hi - s0])

        yield len(work), fill
        return codes

    def _ask_candidates(self, acq: _Acq, cand_slot: np.ndarray, cand_n: np.ndarray, pa: dict[str, np.ndarray],
                        frame: int, bits: tuple[np.ndarray, int, int] | None = None, threads: int = 1
                        ) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """:meth:`_ask_flow`, whose returned flow the returned call runs on up to ``threads`` threads."""
        flow = self._ask_flow(acq, cand_slot, cand_n, pa, frame, bits)
        return lambda: _parallel.drive(flow(), threads)

    def _ask_flow(self, acq: _Acq, cand_slot: np.ndarray, cand_n: np.ndarray, pa: dict[str, np.ndarray],
                  frame: int, bits: tuple[np.ndarray, int, int] | None = None
                  ) -> Callable[[], Flow[tuple[np.ndarray, np.ndarray]]]:
        """The codes (k·4 + a) the two clients of each candidate's pair applied in the candidate
        slots (rows and columns as ``cand_slot``): one ``choices(slots)`` call per client and
        window on the client's modulation log (:attr:`modulation_on_demand`), its slots in
        ascending order; a log with ``ask(slots)`` (a remote client's modulator link, returning
        the wait for its answer) is asked for all clients first. Nothing else of a client is read. The candidates are grouped by client
        in runs of one frame each (:func:`_kernels.group_candidates`) and the answers copied back
        run by run (:func:`_kernels.scatter_codes`): no per-candidate sort or fancy indexing. The
        questions go out now; the returned flow waits for the answers and scatters them.

        ``bits`` = (the window's candidate bitmap of the first pass, its window's s0, s1; word 0 is slots
        64·(s0 // 64) …): a log with
        ``ask_bits(runs, words, n)`` (a remote client's modulator link) is asked with the words of that
        bitmap over the runs of its frames instead (:func:`_kernels.client_bits`; one bit per slot of its
        frames, against a byte per asked slot as gaps), so nothing is copied or encoded per candidate
        for it: the same slots, ascending.

        Clients in this process (logs without ``ask``/``ask_bits``) answer in the returned flow, one task per
        client (:mod:`._parallel`; their kernels and AES release the GIL), each scattering its own codes (a
        client writes only the places of its own side of its pairs' candidates, so no two tasks write the
        same byte); each client's answer is its own, so the codes do not depend on the thread count."""
        rows = cand_n.size
        width = max(int(cand_n.max()) if rows else 0, 1)
        n_clients = len(acq.logs)
        by_bits = [bits is not None and getattr(log, "ask_bits", None) is not None for log in acq.logs]
        # the slots of every client copied here only for clients asked now with ask(slots); a client of this
        # process copies its own in its task (_kernels.client_slots), in parallel with the others
        by_slots = [not b and getattr(log, "ask", None) is not None for b, log in zip(by_bits, acq.logs, strict=True)]
        offsets, slots, runs = K.group_candidates(cand_slot, cand_n, np.int64(frame), pa["frame_pair"],
                                                  pa["ci"], pa["cj"], np.int64(n_clients), any(by_slots))
        out_i, out_j = np.zeros((rows, width), np.uint8), np.zeros((rows, width), np.uint8)
        bounds = offsets.tolist()
        client_runs = self._client_runs(bits[1], bits[2], pa, frame) if bits is not None and any(by_bits) else {}
        answers: list[tuple[int, Callable[[], Any]]] = []
        local: list[tuple[int, Callable[[], Any]]] = []  # clients of this process: answered in parallel
        for c in range(n_clients):  # every client asked before any answer is awaited (remote clients: in parallel)
            lo, hi = bounds[c], bounds[c + 1]
            if hi <= lo:
                continue
            log = acq.logs[c]
            if by_bits[c]:
                assert bits is not None
                rs = np.array(client_runs[c], dtype=np.int64)
                answers.append((c, log.ask_bits(rs, K.client_bits(bits[0], np.int64(bits[1] >> 6), rs), hi - lo)))
            elif not by_slots[c]:
                local.append((c, functools.partial(self._local_answer, log, cand_slot, runs, pa, c, hi - lo)))
            else:
                answers.append((c, self._ask(log, slots[lo:hi])))

        def scattered() -> Flow[tuple[np.ndarray, np.ndarray]]:
            def answer(task: int, slot: int) -> None:
                c, codes_of = local[task]
                K.scatter_codes(np.int64(c), np.asarray(codes_of(), np.uint8), runs, pa["ci"], pa["cj"], out_i, out_j)

            yield len(local), answer
            for c, wait in answers:
                K.scatter_codes(np.int64(c), np.asarray(wait(), np.uint8), runs, pa["ci"], pa["cj"], out_i, out_j)
            return out_i, out_j

        return scattered

    @staticmethod
    def _local_answer(log: Any, cand_slot: np.ndarray, runs: np.ndarray, pa: dict[str, np.ndarray], c: int,
                      n: int) -> np.ndarray:
        """The drive codes of client ``c`` (``log``, in this process) at its ``n`` candidates of the window
        (:func:`_kernels.client_slots` of :func:`_kernels.group_candidates`' ``runs``)."""
        return drive_codes(log, K.client_slots(cand_slot, runs, pa["ci"], pa["cj"], np.int64(c), np.int64(n)))

    @staticmethod
    def _ask(log: Any, slots: np.ndarray) -> Callable[[], np.ndarray]:
        """The wait for ``log``'s drive codes k·4 + a in ``slots``: its ``ask(slots)`` where it has one
        (the question goes out now), else :func:`~labqfl.contracts.types.drive_codes` when waited for."""
        ask = getattr(log, "ask", None)
        if ask is not None:
            return cast(Callable[[], np.ndarray], ask(slots))
        return lambda: drive_codes(log, slots)

    def _cut(self, acq: _Acq, s1: int) -> int:
        """No tag of a later window can be earlier than this time [ps]."""
        t = _round_ps(s1 * acq.period_ps)
        d_min = min(acq.delays["D0"], acq.delays["D1"]) - acq.cut_margin
        d_marker = min([acq.delays[n] for n in self.config.time_tagger.marker_inputs()], default=acq.delays["sync"])
        return min(t + acq.delays["sync"], t + d_min, t + d_marker)

    def _window_inputs(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[DetectorLive], bool,
                                       set[int], int]:
        """Under the lock: the cached client and pair arrays (rebuilt when the live state changed),
        copies of both detectors' live settings, whether the laser is on, the enabled channels and
        the frame length."""
        with self.lock:
            live = self.live
            if self._cache_version != live.version:
                self._cache = (self._client_arrays(), self._pair_arrays())
                self._cache_version = live.version
            ca, pa = self._cache
            dets = [DetectorLive(**vars(live.detectors[d])) for d in ("D0", "D1")]
            return ca, pa, dets, live.laser_on, set(live.enabled_channels), self.config.schedule.slots_per_frame

    def _signal_pass(self, acq: _Acq, run: Callable[..., None], n_tasks: int, sig_n: np.ndarray,
                     how: int, codes: np.ndarray, cand: tuple[np.ndarray, ...],
                     name: str, bits: np.ndarray | None = None) -> Flow[tuple[np.ndarray, np.ndarray]]:
        """One pass of the signal kernel over the window's chunks (``run(task, sig_slot, sig_outc,
        codes, cand)`` per task; ``cand`` = (cand_i, cand_j, cand_slot, cand_n) of
        :func:`_kernels.signal_chunks`) into the ``name`` buffers, doubling their capacity until
        every chunk fits; ``sig_n`` gets the clicks per chunk. ``bits`` (the first pass's candidate bitmap,
        ORed into by the kernel) is zeroed before each try."""
        n_chunks = sig_n.size
        while True:
            cap = acq.cap_sig if name == "sig" else acq.cap_cand
            sig_slot = acq.buffer(f"{name}_slot", (n_chunks, cap), np.int64)
            sig_outc = acq.buffer(f"{name}_outc", (n_chunks, cap), np.uint8)
            if bits is not None:
                bits[:] = 0

            def signal_task(task: int, slot: int, sig_slot: np.ndarray = sig_slot,
                            sig_outc: np.ndarray = sig_outc) -> None:
                run(task, slot, sig_slot, sig_outc, how, codes, cand)

            yield n_tasks, signal_task
            if min(sig_n.tolist()) >= 0:
                break
            if name == "sig":
                acq.cap_sig *= 2
            else:
                acq.cap_cand *= 2
        grown = int(max(sig_n.tolist()) * 1.25) + 256
        if name == "sig":
            acq.cap_sig = max(acq.cap_sig, grown)
        else:
            acq.cap_cand = max(acq.cap_cand, grown)
        return sig_slot, sig_outc

    def _signal_start(self, acq: _Acq, s0: int, s1: int, ca: dict[str, np.ndarray], pa: dict[str, np.ndarray],
                      dets: list[DetectorLive], frame: int,
                      threads: int) -> Flow[Callable[[], Flow[tuple[np.ndarray, np.ndarray, np.ndarray]]]]:
        """Signal clicks (before dead time) of slots [s0, s1), chunks in parallel (a flow, :mod:`._parallel`):
        the flow returned gives (clicks per chunk, their slots, their outcomes). On the on-demand path the
        candidates are drawn and the clients asked now, and the flow returned waits for their answers and
        clicks the candidates (so remote clients answer while the window before is finished); else
        everything is done now."""
        cfg = self.config
        sim = cfg.simulation
        fl = sim.faults
        period = acq.period_ps
        c_first = s0 // CHUNK_SLOTS
        n_chunks = (s1 - 1) // CHUNK_SLOTS - c_first + 1
        collapse = (math.ceil(fl.visibility_collapse_at_s * self.live.rep_rate_hz)
                    if fl.visibility_collapse_at_s is not None else _I64_MAX)
        ir = sim.intercept_resend
        eve = self._client_index[ir.client] if ir.enabled else -1
        drift_chunk, drift_rho = drift_step(cfg.loop, CHUNK_SLOTS * period * 1e-12)
        npairs = pa["ci"].size
        if acq.guide_q.shape[0] < threads or acq.guide_q.shape[1] != npairs:
            acq.guide_q = np.zeros((threads, npairs))
            acq.guide_lo = np.zeros((threads, npairs, K.GUIDE), dtype=np.int64)
            acq.guide_hi = np.zeros((threads, npairs, K.GUIDE), dtype=np.int64)
        thetas = K.drift_thetas(np.int64(c_first), np.int64(c_first + n_chunks - 1), acq.drift_state,
                                drift_chunk, acq.keys["drift"], drift_rho)
        sig_n = np.zeros(n_chunks, dtype=np.int64)
        head = (np.int64(s0), np.int64(s1), np.int64(CHUNK_SLOTS), np.int64(frame), pa["frame_pair"],
                pa["ci"], pa["cj"], pa["eta_cw"], pa["eta_ccw"])
        tail = (ca["cnk"], ca["mu"], ca["phase"], ca["pmode"], ca["fixk0"],
                ca["pat"], ca["pat_off"], ca["pat_len"],
                cfg.loop.beam_splitter_ratio, dets[0].efficiency, dets[1].efficiency,
                cfg.loop.visibility, fl.visibility_after_collapse, np.int64(collapse),
                thetas, acq.keys["gap"], acq.keys["acc"], acq.keys["eve"], eve, ir.fraction)
        # a few tasks per thread (contiguous chunk ranges) balance the pairs' different click rates
        n_tasks = 1 if threads == 1 else min(n_chunks, 2 * threads)
        bounds = [k * n_chunks // n_tasks for k in range(n_tasks + 1)]
        unused = np.zeros((1, 1), dtype=np.uint8)
        no_cand = (unused, unused, np.zeros((1, 1), dtype=np.int64), np.zeros(1, dtype=np.int64), unused)
        no_words = np.zeros((1, 1), dtype=np.uint64)

        guides = (acq.guide_q, acq.guide_lo, acq.guide_hi)  # this window's, even if a later one reallocates them

        # the first pass's candidates also as a bitmap of the window (the modulator links' questions), where a
        # client is asked with one (ask_bits); else none (length 0: the kernels write no bit, 10-20 % of the
        # first pass on the default station, and nothing is zeroed)
        bits_w0 = s0 >> 6
        asked_by_bits = acq.on_demand and any(getattr(log, "ask_bits", None) is not None for log in acq.logs)
        cand_bits = np.empty(((s1 - 1) >> 6) - bits_w0 + 1 if asked_by_bits else 0, dtype=np.uint64)

        def run(task: int, slot: int, sig_slot: np.ndarray, sig_outc: np.ndarray, how: int, codes: np.ndarray,
                cand: tuple[np.ndarray, ...]) -> None:
            K.signal_chunks(np.int64(bounds[task]), np.int64(bounds[task + 1]), *head, codes, *tail,
                            guides[0][slot], guides[1][slot], guides[2][slot],
                            sig_slot, sig_outc, sig_n, how, *cand[:4], acq.keys["gap_bright"], cand[4],
                            codes.view(np.uint64) if how == 0 else no_words, cand_bits, np.int64(bits_w0))

        if acq.on_demand:
            # the candidate slots first (independent of the choices), then the clients' codes
            # in those slots only (ModulationLog.choices), then the clicks of those candidates
            # (and per candidate whether it is in the low-rate set C_lo of _kernels._segment_bright)
            name = f"cand{acq.windows_started % 2}"  # the buffers of a window still being finished stay apart
            acq.windows_started += 1
            cand_slot, cand_lo = yield from self._signal_pass(acq, run, n_tasks, sig_n, 1, unused, no_cand, name,
                                                              bits=cand_bits)
            cand_n = sig_n.copy()
            codes_of = self._ask_flow(acq, cand_slot, cand_n, pa, frame, (cand_bits, s0, s1))

            def clicked() -> Flow[tuple[np.ndarray, np.ndarray, np.ndarray]]:
                cand_i, cand_j = yield from codes_of()
                sig_slot, sig_outc = yield from self._signal_pass(acq, run, n_tasks, sig_n, 2, unused,
                                                                  (cand_i, cand_j, cand_slot, cand_n, cand_lo), "sig")
                return sig_n, sig_slot, sig_outc

            return clicked
        codes = yield from self._drive_patterns(acq, s0, s1, pa, frame)
        sig_slot, sig_outc = yield from self._signal_pass(acq, run, n_tasks, sig_n, 0, codes, no_cand, "sig")
        return lambda: _done((sig_n, sig_slot, sig_outc))

    def _detector_params(self, acq: _Acq, s0: int, s1: int, dets: list[DetectorLive],
                         t_loop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """Per detector (D0, D1): on/off, the integer and float parameters and the stream keys of
        :func:`kernels.detector_window`, and a capacity for the window's dark counts."""
        cfg = self.config
        fl = cfg.simulation.faults
        period = acq.period_ps
        sig_extra = math.hypot(cfg.laser.timing_jitter_ps, cfg.laser.pulse_width_ps / 2.3548)
        on = np.zeros(2, dtype=np.uint8)
        ip = np.zeros((2, 5), dtype=np.int64)
        fp = np.zeros((2, 7))
        keys = np.zeros((2, 3), dtype=np.uint64)
        dcap = 64
        for k, (d, dl) in enumerate(zip(("D0", "D1"), dets, strict=True)):
            on[k] = dl.enabled
            rate = dl.dcr_hz() * 1e-12
            exp_dark = rate * (s1 - s0) * period
            dcap = max(dcap, int(exp_dark + 10 * math.sqrt(exp_dark) + 64))
            ip[k] = (round(fl.detector_dies_at_s * 1e12) if fl.detector_dies == d else _I64_MAX,
                     round(dl.dead_time_ns * 1e3), acq.delays[d] - t_loop, acq.res_ps, int(dl.gated))
            fp[k] = (rate, dl.gate_delay_ps, dl.gate_width_ns * 1e3, dl.afterpulse_prob, dl.afterpulse_decay_ns * 1e3,
                     math.hypot(dl.jitter_ps, sig_extra), dl.jitter_ps)
            keys[k] = (acq.keys[f"dark_{d}"], acq.keys[f"ap_{d}"], acq.keys[f"jit_{d}"])
        return on, ip, fp, keys, dcap

    def _detector_tags(self, acq: _Acq, s0: int, s1: int, dets: list[DetectorLive],
                       sig: tuple[np.ndarray, ...]) -> Flow[tuple[np.ndarray, np.ndarray]]:
        """Both detectors in parallel (a flow): dark counts, dead time, afterpulses, jitter, tagger. Returns
        the measured times (one row per detector) and the number of tags in each row."""
        sig_n, sig_slot, sig_outc = sig
        period = acq.period_ps
        t_loop = _round_ps(self.loop_delay_ps)
        win_end = _round_ps(s1 * period) + t_loop
        period_int = int(round(period)) if period == round(period) else 0
        on, ip, fp, keys, dcap = self._detector_params(acq, s0, s1, dets, t_loop)
        ocap = int(sum(sig_n.tolist())) + dcap + K.PEND_CAP + 16
        out_n = np.zeros(2, dtype=np.int64)
        active = [d for d in (0, 1) if on[d]]
        while True:
            st, pd = acq.det_state.copy(), acq.det_pend.copy()
            dark = acq.buffer("dark", (2, dcap), np.int64)
            meas = acq.buffer("meas", (2, ocap), np.int64)

            def detector_task(task: int, slot: int, st: np.ndarray = st, pd: np.ndarray = pd,
                              dark: np.ndarray = dark, meas: np.ndarray = meas) -> None:
                d = active[task]
                out_n[d] = K.detector_window(d, sig_slot, sig_outc, sig_n, np.int64(s0), np.int64(s1),
                                             np.int64(CHUNK_SLOTS), period, np.int64(period_int), np.int64(t_loop),
                                             np.int64(win_end), ip, fp, keys, K.GAUSS_TABLE, pd, st, dark, meas)

            yield len(active), detector_task
            if min(out_n.tolist()) >= 0:
                break
            dcap *= 2
            ocap *= 2
        acq.det_state, acq.det_pend = st, pd
        return meas, out_n

    def _window_start(self, acq: _Acq, s0: int, s1: int) -> Flow[Callable[[], Flow[tuple[np.ndarray, np.ndarray]]]]:
        """Tags of slots [s0, s1) merged with ``acq.carry`` into one sorted stream (times, channels), begun
        (a flow, :mod:`._parallel`; :meth:`_signal_start`: on the on-demand path the clients are asked now);
        the flow returned finishes it and gives them. Windows are finished in order (the detectors' state and
        the carry run from one to the next); the next one may be begun before, or while this one is finished
        (:meth:`_acquire`)."""
        ca, pa, dets, laser_on, enabled, frame = self._window_inputs()
        threads = self._n_threads()
        if laser_on and ca["mu"].any():
            signal = yield from self._signal_start(acq, s0, s1, ca, pa, dets, frame, threads)
        else:
            dark = (np.zeros(1, dtype=np.int64), np.zeros((1, 1), dtype=np.int64), np.zeros((1, 1), dtype=np.uint8))
            signal = lambda: _done(dark)  # noqa: E731
        return lambda: self._window_finish(acq, s0, s1, signal, dets, enabled, threads)

    def _window_finish(self, acq: _Acq, s0: int, s1: int,
                       signal: Callable[[], Flow[tuple[np.ndarray, np.ndarray, np.ndarray]]],
                       dets: list[DetectorLive], enabled: set[int], threads: int) -> Flow[tuple[np.ndarray, np.ndarray]]:
        """The signal clicks (``signal``, begun by :meth:`_window_start`), the detectors, the tagger and the
        merge of a window (a flow)."""
        cfg = self.config
        fl = cfg.simulation.faults
        sig = yield from signal()
        meas, out_n = yield from self._detector_tags(acq, s0, s1, dets, sig)
        ch0, ch1, chs = acq.channels["D0"], acq.channels["D1"], acq.channels["sync"]
        srcs = [acq.carry_t,
                meas[0, :out_n[0]] if ch0 in enabled else _EMPTY_T,
                meas[1, :out_n[1]] if ch1 in enabled else _EMPTY_T,
                K.sync_kernel(np.int64(s0), np.int64(s1), np.int64(cfg.time_tagger.sync_divider), acq.period_ps,
                              np.int64(acq.delays["sync"]), np.int64(acq.res_ps),
                              float(fl.sync_drop_prob), acq.keys["sync"]) if chs in enabled else _EMPTY_T]
        return (yield from _merge(srcs, acq.carry_c, np.int16(ch0), np.int16(ch1), np.int16(chs), threads))

    def candidate_rate(self) -> float:
        """The largest thinning candidate rate per slot of the active pairs with the live settings: p_max,
        the largest any-click probability of a pair's combinations (:func:`_kernels._build_table`, loop phase
        0), which is also the rate of C_lo ∪ E where two rates are used. 0 with the laser off."""
        ca, pa, dets, laser_on, _, _ = self._window_inputs()
        if not laser_on:
            return 0.0
        cfg = self.config
        table = np.empty((K.K_MAX * K.K_MAX * K.N_PHASE * K.N_PHASE, 3))
        return max((float(K._build_table(table, int(ci), int(cj), float(ecw), float(eccw), ca["mu"], ca["cnk"],
                                         ca["phase"], ca["pmode"], cfg.loop.beam_splitter_ratio, cfg.loop.visibility,
                                         dets[0].efficiency, dets[1].efficiency, 0.0))
                    for ci, cj, ecw, eccw in zip(pa["ci"], pa["cj"], pa["eta_cw"], pa["eta_ccw"], strict=True)),
                   default=0.0)

    def on_demand_for(self, logs: dict[str, Any], hardware: EmulatedModulators | None = None) -> bool:
        """The path of an acquisition from ``logs`` (:attr:`modulation_on_demand`): as set, else on demand
        unless emulated pattern generators play (``hardware``), on demand where a log cannot write drive
        patterns (no ``fill_codes``), else where :meth:`candidate_rate` ≤ :data:`ON_DEMAND_MAX_RATE`."""
        if self.modulation_on_demand is not None:
            return bool(self.modulation_on_demand)
        if hardware is not None:
            return False
        if any(getattr(lg, "fill_codes", None) is None for lg in logs.values()):
            return True
        return self.candidate_rate() <= ON_DEMAND_MAX_RATE

    def _window_tags(self, acq: _Acq, finish: Flow[tuple[np.ndarray, np.ndarray]], w0: int, w1: int, n_slots: int,
                     markers: dict[str, int], hardware: EmulatedModulators | None
                     ) -> Flow[tuple[np.ndarray, np.ndarray]]:
        """A window's tags (``finish``, a flow of :meth:`_window_start`) with the frame markers, cut where no
        later window's tag can come before (the rest carried to the next window): the tags of the window's
        part of its block (a flow, so that the cut runs beside the next window's tasks)."""
        ts, ch = yield from finish
        tt = self.config.time_tagger
        for name, marker in markers.items():  # one marker at the start of every frame of frame_slots slots
            mt = K.sync_kernel(np.int64(w0), np.int64(w1), np.int64(tt.frame_slots), acq.period_ps,
                               np.int64(acq.delays[name]), np.int64(acq.res_ps), 0.0, np.uint64(0))
            if hardware is not None:  # only where the generator(s) wired to this input played the marker
                frames = -(-w0 // tt.frame_slots) + np.arange(mt.size, dtype=np.int64)
                client = name.split(".", 1)[1] if "." in name else None
                mt = mt[hardware.frame_markers(frames, tt.frame_slots, client=client)]
            at = np.searchsorted(ts, mt, side="right")
            ts, ch = np.insert(ts, at, mt), np.insert(ch, at, np.int16(marker))
        cut = self._cut(acq, w1) if w1 < n_slots else _round_ps(n_slots * acq.period_ps)
        k = int(np.searchsorted(ts, cut, side="left"))
        lo = int(np.searchsorted(ts, 0, side="left"))
        acq.carry_t, acq.carry_c = ts[k:].copy(), ch[k:].copy()
        return ts[lo:k], ch[lo:k]

    def _acquire(self, epoch: int, duration_s: float, block_duration_s: float | None,
                 logs: dict[str, ChoiceLog] | dict[str, Any], hardware: EmulatedModulators | None = None
                 ) -> Iterator[TagBlock]:
        if not (duration_s > 0 and math.isfinite(duration_s)):
            raise ValueError(f"duration_s must be a finite number > 0, got {duration_s!r}")
        bd = self.config.simulation.block_duration_s if block_duration_s is None else block_duration_s
        if not (bd > 0 and math.isfinite(bd)):
            raise ValueError(f"block_duration_s must be a finite number > 0, got {bd!r}")
        with self.lock:
            rep = self.live.rep_rate_hz
        n_slots = max(1, int(round(duration_s * rep)))
        b_slots = max(1, int(round(bd * rep)))
        acq = self._new_acq(epoch, n_slots, logs)
        acq.on_demand = self.on_demand_for(logs, hardware)
        tt = self.config.time_tagger
        with self.lock:
            markers = {n: c for n, c in tt.marker_inputs().items() if c in self.live.enabled_channels}
        if hardware is not None:
            hardware.begin()
        window = WINDOW_SLOTS_ON_DEMAND if acq.on_demand else WINDOW_SLOTS
        # windows of at most `window` slots (the tags do not depend on how slots are cut), blocks of b_slots
        cuts = ((s0, w0, min(w0 + window, s0 + b_slots, n_slots)) for s0 in range(0, n_slots, b_slots)
                for w0 in range(s0, min(s0 + b_slots, n_slots), window))
        # On the on-demand path (no emulated generators) the next window is begun while this one is
        # finished (two flows on the same threads, _parallel.run_flows: the tasks of one fill the gaps
        # between the phases of the other): its clients are asked while this window's clicks, detectors
        # and merge run, instead of the Monte-Carlo waiting for their answers.
        ahead = acq.on_demand and hardware is None
        threads = self._n_threads()
        nxt = next(cuts, None)
        try:
            yield from self._windows(acq, cuts, nxt, n_slots, markers, hardware, ahead, threads)
        finally:
            self._keep_scratch(acq)

    def _windows(self, acq: _Acq, cuts: Iterator[tuple[int, int, int]], nxt: tuple[int, int, int] | None,
                 n_slots: int, markers: dict[str, int], hardware: EmulatedModulators | None, ahead: bool,
                 threads: int) -> Iterator[TagBlock]:
        """:meth:`_acquire`'s windows (``cuts``, the first one ``nxt``) as its tag blocks."""
        started: Callable[[], Flow[tuple[np.ndarray, np.ndarray]]] | None = None
        parts_t: list[np.ndarray] = []
        parts_c: list[np.ndarray] = []
        while nxt is not None:
            s0, w0, w1 = nxt
            nxt = next(cuts, None)
            if hardware is not None:  # the generators play the window first; the loop reads what came out
                hardware.release(w0)
                hardware.play_until(w1)
            this = started if started is not None else _parallel.drive(self._window_start(acq, w0, w1), threads)
            tags = self._window_tags(acq, this(), w0, w1, n_slots, markers, hardware)
            if ahead and nxt is not None:  # the next window begun first (remote clients asked before this one
                # waits for its answers), this window's tasks taken first (the longer chain: answers, clicks,
                # detectors, merge, the cut)
                started, (part_t, part_c) = _parallel.run_flows([self._window_start(acq, nxt[1], nxt[2]), tags],
                                                                threads, priority=[1, 0])
            else:
                started = None
                part_t, part_c = _parallel.drive(tags, threads)
            parts_t.append(part_t)
            parts_c.append(part_c)
            if nxt is not None and nxt[0] == s0:
                continue  # the block goes on in the next window
            if hardware is not None and w1 == n_slots:
                hardware.finish()  # the last upload plays out: its frames get their verdicts
            if len(parts_t) == 1:
                yield TagBlock(parts_t[0], parts_c[0])
            else:
                yield TagBlock(np.concatenate(parts_t), np.concatenate(parts_c))
            parts_t, parts_c = [], []

    def stream(self, duration_s: float, block_duration_s: float | None = None) -> Iterator[TagBlock]:
        """One acquisition of ``duration_s`` seconds as :class:`TagBlock` s of ``block_duration_s``
        (default ``config.simulation.block_duration_s``). Sets :attr:`last_epoch` at once, and every
        client arms its generator for it at once (:meth:`client_log`). With emulated pattern generators
        (:attr:`hardware`) the clients must start streaming those logs to their generators before the
        first block is asked for (``labqfl.app.station.start_client_streams``); the loop then plays
        what the generators played."""
        with self.lock:
            epoch = self._epoch
            self._epoch += 1
            self.last_epoch = epoch
            logs = {c.name: new_client_log(c, epoch) for c in self.config.clients}
            self._logs[epoch] = logs
        hw = self.hardware
        if hw is not None:  # the clients stream their logs to their generators; the loop sees what those play
            hw.align()
            sources: dict[str, Any] = {c: hw.levels.get(c, lg) for c, lg in logs.items()}
            return self._acquire(epoch, duration_s, block_duration_s, sources, hw)
        return self._acquire(epoch, duration_s, block_duration_s, logs)

    def stream_with(self, logs: dict[str, ChoiceLog], duration_s: float,
                    block_duration_s: float | None = None, *, hardware: bool = False) -> Iterator[TagBlock]:
        """One acquisition like :meth:`stream`, with the clients' choices from ``logs`` (by client
        name) instead of generators armed here: objects with ``choices(slots)`` (e.g. the
        modulator links of separate client nodes, with :attr:`modulation_on_demand`). The
        testbed keeps no copy of them (:meth:`client_log` does not know them). ``hardware``: the
        clients with emulated pattern generators (:attr:`hardware`) are played from what their
        generators played, never from ``logs`` (call ``hardware.align()`` before they start streaming)."""
        missing = [c for c in self.config.client_names if c not in logs]
        if missing:
            raise ValueError(f"no modulation source for client(s) {missing}; every client of the station needs one")
        with self.lock:
            epoch = self._epoch
            self._epoch += 1
            self.last_epoch = epoch
        hw = self.hardware if hardware else None
        sources: dict[str, Any] = {c: hw.levels.get(c, lg) for c, lg in logs.items()} if hw is not None else dict(logs)
        return self._acquire(epoch, duration_s, block_duration_s, sources, hw)

    def _internal_stream(self, duration_s: float) -> Iterator[TagBlock]:
        """An acquisition for instrument read-outs (count rates, histograms); own epoch space."""
        with self.lock:
            epoch = _INTERNAL_EPOCH_BASE + self._internal_epoch
            self._internal_epoch += 1
        logs = {c.name: new_client_log(c, epoch) for c in self.config.clients}
        return self._acquire(epoch, duration_s, None, logs)

    # -- read-outs for calibration ---------------------------------------------------------
    def count_rates(self, integration_s: float = 0.1) -> dict[int, float]:
        """Counts per second per enabled tagger channel over ``integration_s`` [Hz]."""
        with self.lock:
            chans = sorted(self.live.enabled_channels)
        counts = dict.fromkeys(chans, 0)
        for blk in self._internal_stream(integration_s):
            blk.channel_counts(counts)
        return {ch_: n / integration_s for ch_, n in counts.items()}

    def detector_count_rates(self, integration_s: float = 0.1) -> dict[str, float]:
        """Click rate of each detector [Hz] (0 for a detector whose tagger channel is off)."""
        r = self.count_rates(integration_s)
        return {d: r.get(ch, 0.0) for d, ch in self.config.time_tagger.detector_channels.items()}

    def histogram(self, start_channel: int, click_channel: int, binwidth_ps: int, n_bins: int,
                  integration_s: float) -> np.ndarray:
        """Start–stop histogram (int64, n_bins) of click delays after the latest start tag."""
        hist = np.zeros(int(n_bins), dtype=np.int64)
        last = np.array([-1], dtype=np.int64)
        for blk in self._internal_stream(integration_s):
            K.start_stop_histogram(blk.timestamps, blk.channels, int(start_channel), int(click_channel),
                                   np.int64(binwidth_ps), hist, last)
        return hist

    def tap_power_w(self, tap: str = "laser", laser_tap_ratio: float = 0.01) -> float:
        """True optical power at a calibration tap [W].

        ``"laser"``: laser output × ``laser_tap_ratio`` (0 when off). ``"Ck"``: power leaving client
        k towards the node at its signal level (intensity index 0) with the current laser power and
        attenuator setting, μ₀·hν·f_rep.
        """
        with self.lock:
            live = self.live
            if tap == "laser":
                return live.power_mw * 1e-3 * laser_tap_ratio if live.laser_on else 0.0
            if tap not in live.clients:
                raise ValueError(f"power-meter tap must be 'laser' or one of {list(live.clients)}, got {tap!r}")
            ca = self._client_arrays()
            mu0 = float(ca["mu"][self._client_index[tap], 0])
            photon_j = photon_energy_j(live.wavelength_nm)
            return mu0 * photon_j * live.rep_rate_hz

    def fringe_scan(self, client: str, voltages: np.ndarray | list[float], *, reference: str | None = None,
                    integration_s: float = 0.01) -> dict[str, np.ndarray]:
        """Counts of D0 and D1 versus a DC voltage on ``client``'s phase modulator.

        Only the pair (client, reference) runs; both send their signal intensity on every pulse;
        the reference modulator sits at 0 V. D0 ∝ 1 + v·cos(πV/Vπ + φ0_client − φ0_ref) (fit with
        C(V) = C_bg + (C0/2)[1 + v·cos(πV/Vπ + φ0)]). The live state is restored afterwards.
        """
        names = self.config.client_names
        if client not in names:
            raise ValueError(f"unknown client {client!r}; clients are {names}")
        if reference is None:
            k = names.index(client)
            reference = names[k + 1] if k + 1 < len(names) else names[k - 1]
        if reference not in names or reference == client:
            raise ValueError(f"reference must be another client from {names}, got {reference!r}")
        volts = np.asarray(voltages, dtype=np.float64)
        ch0 = self.channel_of("D0")
        ch1 = self.channel_of("D1")
        with self.lock:
            saved_pairs = self.live.pairs
            saved = {n: (c.dc_volts, c.pm_enabled) for n, c in self.live.clients.items()}
            try:
                self.restrict_pairs([(client, reference)])
                self.live.clients[reference].dc_volts = 0.0
                self.live.clients[reference].pm_enabled = True
                self.live.clients[client].pm_enabled = True
                d0 = np.zeros(volts.size, dtype=np.int64)
                d1 = np.zeros(volts.size, dtype=np.int64)
                for n, v in enumerate(volts):
                    self.live.clients[client].dc_volts = float(v)
                    self.touch()
                    r = self.count_rates(integration_s)
                    d0[n] = round(r.get(ch0, 0.0) * integration_s)
                    d1[n] = round(r.get(ch1, 0.0) * integration_s)
            finally:
                self.live.pairs = saved_pairs
                for name, (dc, en) in saved.items():
                    self.live.clients[name].dc_volts = dc
                    self.live.clients[name].pm_enabled = en
                self.touch()
        return {"voltages": volts, "D0": d0, "D1": d1}
