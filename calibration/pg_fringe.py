"""The Vπ fringe of a phase modulator fed by its pattern generator's phase bits (a "PG station",
``drivers/bit_phase_modulator.py``: combiner + RF amplifier of gain G into the modulator, DC bias port beside it).

Such a modulator holds no constant phase of its own: its phase is the code the client's pattern generator
plays, φ_a = π·G·u_a/Vπ + φ0 with u_a = b0·w0 + b1·w1 (Saleh & Teich, *Fundamentals of Photonics*, §20.1).
The scan therefore goes through the pattern generator, as the client's own frames do: during each point the
client under test's generator plays code 3 (both bits on, u_3 = w0 + w1) at its signal intensity in every
slot, the reference client's plays code 0 (no RF drive), every other client's its lowest intensity (its
vacuum level), all uploaded through the :class:`~labqfl.instruments.interfaces.PatternGenerator` interface
(:class:`labqfl.modulation.ClientStreams`, as an acquisition streams the clients' choices). The scan variable
is the drive V = G·(w0 + w1): the amplifier gain is stepped (``rf_gain_db``, read back after each write) so
that V spans about two fringe periods (2·``periods``·Vπ) from its smallest value; both DC bias ports sit at
0 V. The clicks of D0 and D1 in the frames of the pair (client, reference) follow the fringe of
:mod:`labqfl.calibration.phase_modulator`, C(V) = M + A·cos(πV/Vπ + φ0), fitted jointly (:func:`fit_fringe`).

What it measures: the Vπ of the RF path referred to the nominal drive G·u (the combiner levels
``bit_levels_v`` and the amplifier's dB scale as the driver states them: an error in either is absorbed
into Vπ, which is what the encoding needs, since the ideal gain G·w0 = Vπ/2 is computed on the same
scale), and the client's bias phase relative to the reference's (plus the loop's phase drift during the
scan). Assumed: the amplifier is linear over the scanned drive, and the combiner is binary-weighted only
as far as the encoding goes (the scan uses code 3 alone).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from labqfl.calibration.core import CalContext, SettingsGuard, pulsed_dead_time_correction

from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import pair_name
from labqfl.errors import CalibrationError
from labqfl.modulation import ClientStreams
from labqfl.physics import loop_delay_ps
from labqfl.station import hold_master_clocks

#: the phase code the client under test plays (both phase bits on) and the reference's (no RF drive)
SCAN_CODE = 3
REFERENCE_CODE = 0


class ConstantCodes:
    """A choice source (:class:`labqfl.modulation.ChoiceSource`) that plays one drive code k·4 + a in every
    slot: a calibration pattern, not a client's randomness."""

    def __init__(self, client: str, code: int) -> None:
        if not 0 <= int(code) < 256:
            raise ValueError(f"drive code must lie in 0..255, got {code!r}")
        self.client = client
        self.code = np.uint8(code)

    def fill_codes(self, s0: int, out: np.ndarray) -> None:
        out[:] = self.code


def pg_driven(ctx: CalContext, client: str) -> bool:
    """Whether ``client``'s phase modulator takes its phases from the client's pattern generator's bits."""
    if ctx.config.client(client).pattern_generator is None:
        return False
    pm = ctx.station.phase_modulator(client)
    return all(hasattr(pm, a) for a in ("bit_levels_v", "rf_gain_db", "dc_voltage", "ideal_gain_db"))


def loop_truth(ctx: CalContext, clients: tuple[str, ...]) -> bool:
    """Whether the light is a simulated loop that builds these clients' modulators from the station file (an
    emulated station: pattern generators emulated, the loop following the drivers), so the file's values are
    the truth the procedure must recover."""
    cfg = ctx.config
    sim = cfg.simulation
    light_simulated = cfg.time_tagger.simulated or sim.emulate_time_tagger
    return bool(light_simulated and sim.emulate_pattern_generators
                and all(cfg.client(c).pattern_generator is not None for c in clients))


def vacuum_code(ctx: CalContext, client: str) -> int:
    """The drive code of ``client``'s lowest intensity (its vacuum level) with phase code 0."""
    intens = ctx.config.client(client).intensities
    return int(np.argmin(intens)) * 4 + REFERENCE_CODE


def signal_code(ctx: CalContext, client: str, phase_code: int) -> int:
    """The drive code k·4 + a of ``client``'s signal intensity (the first of its ``intensities``,
    docs/station.md) with phase code ``phase_code``."""
    intens = ctx.config.client(client).intensities
    if not intens or intens[0] <= 0:
        raise CalibrationError(f"{client}: its first intensity (the signal) is {intens[:1]}; the fringe needs light")
    return int(phase_code)


def played_pair_slots(ctx: CalContext, pair: tuple[str, str], n_slots: int,
                      played: dict[str, set[int]]) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """The slots of an acquisition of ``n_slots`` slots that count for ``pair``: those of the pair's frames that
    both clients' generators played (``played``: frame indices by client; a frame played dark or lost to an
    underflow carried no light of the client). Returns (how many, a mask function over slot numbers)."""
    cfg = ctx.config
    sched = PairSchedule.from_config(cfg)
    name = pair_name(*sorted(pair, key=cfg.client_names.index))
    if name not in sched.names:
        raise CalibrationError(f"pair {name} is not scheduled; scheduled pairs: {sched.names}")
    F = sched.slots_per_frame
    frames = np.arange(-(-n_slots // F), dtype=np.int64)
    ok = sched.frame_pair[frames % sched.cycle_frames] == sched.names.index(name)
    for c in pair:
        if c in played:
            ok &= np.isin(frames, np.fromiter(played[c], dtype=np.int64, count=len(played[c])))
    n_pair = int(np.minimum(F, n_slots - frames * F)[ok].sum())

    def keep(slots: np.ndarray) -> np.ndarray:
        inside = (slots >= 0) & (slots < n_slots)
        out = np.zeros(slots.shape, dtype=bool)
        out[inside] = ok[slots[inside] // F]
        return out

    return n_pair, keep


def slots_of_tags(ctx: CalContext, d: str, t: np.ndarray) -> np.ndarray:
    """Slot of each tag of detector ``d`` (the station's delays: loop + cable + input; acquisition from slot 0,
    as :mod:`labqfl.calibration.visibility` assigns them)."""
    cfg = ctx.config
    tt = cfg.time_tagger
    ch = tt.detector_channels[d]
    T = 1e12 / float(ctx.station.laser.rep_rate_hz)
    delay = loop_delay_ps(cfg.loop) + ctx.value(f"{d}.cable_delay_ps", tt.cable_delays_ps.get(d, 0.0)) \
        + float(ctx.station.time_tagger.input_delays_ps.get(ch, 0))
    return np.floor((t - delay) / T + 0.5).astype(np.int64)


@dataclass
class Segment:
    """What :func:`constant_code_tags` acquired: the detectors' tags by tagger channel, the slots, and the
    frames each streaming client's generator played."""

    tags: dict[int, np.ndarray]
    n_slots: int
    played: dict[str, set[int]]

    def pair_clicks(self, ctx: CalContext, pair: tuple[str, str]) -> tuple[int, int]:
        """Clicks of D0 and D1 in the frames of ``pair`` both clients played."""
        _, keep = played_pair_slots(ctx, pair, self.n_slots, self.played)
        tt = ctx.config.time_tagger
        n0, n1 = (int(np.count_nonzero(keep(slots_of_tags(ctx, d, self.tags[tt.detector_channels[d]]))))
                  for d in ("D0", "D1"))
        return n0, n1


def constant_code_tags(ctx: CalContext, duration_s: float, codes: dict[str, int]) -> Segment:
    """One acquisition of ``duration_s`` seconds in which every client's pattern generator plays its code of
    ``codes`` (others: their vacuum level) in every slot.

    The same order as an application acquisition segment (:class:`labqfl.app.acquire.Acquisition`): running
    master clocks held, the tagger's acquisition prepared and started, then the streams."""
    st = ctx.station
    cfg = ctx.config
    block = cfg.simulation.block_duration_s
    chans = [cfg.time_tagger.detector_channels[d] for d in ("D0", "D1")]
    restart = hold_master_clocks(st.instruments.values())
    st.prepare_acquisition(duration_s, block)
    blocks: Any = st.time_tagger.stream(duration_s, block, **({"on_recording": restart} if restart else {}))
    gens = {c.name: st[f"{c.name}.pattern_generator"] for c in cfg.clients if c.pattern_generator is not None}
    logs = {c: ConstantCodes(c, codes.get(c, vacuum_code(ctx, c))) for c in gens}
    streams = None
    records: dict[str, Any] = {}
    parts: dict[int, list[np.ndarray]] = {c: [] for c in chans}
    try:
        streams = ClientStreams.start_for(gens, logs, duration_s, cfg.laser.rep_rate_hz)
        for blk in blocks:
            for c in chans:
                parts[c].append(blk.timestamps[blk.channels == c])
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
        if streams is not None:
            records = streams.finish(timeout_s=5.0)
    tags = {c: np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for c, p in parts.items()}
    return Segment(tags, int(round(duration_s * float(st.laser.rep_rate_hz))),
                   {c: set(rec.played) for c, rec in records.items()})


def constant_code_clicks(ctx: CalContext, duration_s: float, codes: dict[str, int],
                         pair: tuple[str, str]) -> tuple[float, float]:
    """Clicks of D0 and D1 in the frames of ``pair`` both clients played during :func:`constant_code_tags`, with
    the click law undone (:func:`linear_counts`)."""
    seg = constant_code_tags(ctx, duration_s, codes)
    n_pair, _ = played_pair_slots(ctx, pair, seg.n_slots, seg.played)
    if n_pair == 0:
        raise CalibrationError(f"no frame of the pair {pair} was played by both clients in {duration_s:g} s")
    n0, n1 = seg.pair_clicks(ctx, pair)
    return linear_counts(ctx, "D0", n0, n_pair), linear_counts(ctx, "D1", n1, n_pair)


def linear_counts(ctx: CalContext, d: str, clicks: int, n_slots: int) -> float:
    """``clicks`` of detector ``d`` in ``n_slots`` pulses as N·m, m = −ln(1 − p) the mean number of detected
    photons per pulse, p the click probability per pulse before dead time (:func:`pulsed_dead_time_correction`).
    The fringe is a cosine in m (Lucamarini et al., Nature 557, 400 (2018), Methods), not in the clicks, whose
    saturation 1 − e^(−m) and dead time add harmonics. Poisson weights stay (var N·m ≈ N·m·(1 + p/2) at these
    p ≪ 1)."""
    T = 1e12 / float(ctx.station.laser.rep_rate_hz)
    tau_ps = ctx.value(f"{d}.dead_time_ns", ctx.config.detectors[d].dead_time_ns) * 1e3
    p = pulsed_dead_time_correction(clicks / n_slots, tau_ps, T)
    if p >= 0.5:
        raise CalibrationError(f"{d}: detector saturated ({p:.2f} clicks per pulse); lower the light level")
    return -n_slots * math.log1p(-p)


def scheduled_reference(ctx: CalContext, k: str, ref: str, explicit: bool) -> str:
    """``ref`` when the pair (k, ref) has frames in the schedule (the scan counts only those); otherwise, unless
    the reference was asked for (``explicit``), ``k``'s first scheduled partner."""
    cfg = ctx.config
    partners = [b if a == k else a for a, b in cfg.pairs() if k in (a, b)]
    if ref in partners:
        return ref
    if explicit or not partners:
        raise CalibrationError(f"{k}: the pair ({k}, {ref}) has no frames in the schedule; a pattern-generator "
                               f"fringe needs a scheduled pair (partners of {k}: {partners or 'none'})")
    return partners[0]


def _hold_dc(guard: SettingsGuard, pm: Any) -> None:
    """DC bias port to 0 V; the guard puts the old voltage back."""
    old = float(pm.dc_voltage())
    guard.remember_call(pm, "__call__dc_bias", lambda: pm.set_dc_voltage(old))
    pm.set_dc_voltage(0.0)


def prepare_modulators(ctx: CalContext, guard: SettingsGuard, clients: tuple[str, ...]) -> None:
    """The clients' RF amplifier outputs on and their DC bias ports at 0 V (the guard restores both)."""
    for c in clients:
        p = ctx.station.phase_modulator(c)
        guard.set(p, "output_enabled", True)
        _hold_dc(guard, p)


def scan_codes(ctx: CalContext, k: str, ref: str) -> dict[str, int]:
    """During the scan: ``k`` plays code 3 and ``ref`` code 0, both at their signal intensity."""
    return {k: signal_code(ctx, k, SCAN_CODE), ref: signal_code(ctx, ref, REFERENCE_CODE)}


def pg_drive_scan(ctx: CalContext, guard: SettingsGuard, k: str, n_points: int, periods: float,
                  measure: Callable[[], Any]) -> tuple[float, np.ndarray, list[Any]]:
    """Step ``k``'s amplifier gain so that the drive of code 3, V = G·(w0 + w1), spans 2·``periods``·V_π
    from its smallest value (within the gain range) and call ``measure()`` at each point.

    Returns (nominal V_π [V], the drive voltages from the gains read back [V], what ``measure`` returned)."""
    pm = ctx.station.phase_modulator(k)
    u3 = float(sum(pm.bit_levels_v))  # type: ignore[attr-defined]
    vpi_nom = float(ctx.value(f"{k}.v_pi_v", pm.v_pi_v))
    lo_db, hi_db, _ = type(pm).rf_gain_db.limits(pm)  # type: ignore[attr-defined]
    v_lo, v_max = u3 * 10.0 ** (lo_db / 20.0), u3 * 10.0 ** (hi_db / 20.0)
    v_hi = min(v_lo + 2.0 * periods * vpi_nom, v_max)
    if v_hi - v_lo < 1.5 * vpi_nom:
        raise CalibrationError(f"{k}: the amplifier's gain range {lo_db:g}–{hi_db:g} dB drives code {SCAN_CODE} only "
                               f"from {v_lo:.3g} to {v_hi:.3g} V, less than 1.5·Vπ (Vπ ≈ {vpi_nom:.3g} V)")
    ctx.step(f"{k}: fringe scan through its pattern generator ({n_points} points, drive of code {SCAN_CODE} "
             f"{v_lo:.3g}–{v_hi:.3g} V by the amplifier gain)")
    volts = np.zeros(n_points)
    out = []
    for i, v in enumerate(np.linspace(v_lo, v_hi, n_points)):
        guard.set(pm, "rf_gain_db", round(min(max(20.0 * math.log10(v / u3), lo_db), hi_db), 2))
        volts[i] = u3 * 10.0 ** (float(pm.rf_gain_db) / 20.0)  # type: ignore[attr-defined]
        out.append(measure())
    return vpi_nom, volts, out


def pg_fringe_scan(ctx: CalContext, guard: SettingsGuard, k: str, ref: str, n_points: int, t_pt: float,
                   periods: float) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Clicks on D0 and D1 in the frames of (k, ref) against the drive G·(w0 + w1) of ``k``'s code 3
    (module docstring). Returns (nominal V_π [V], drive voltages [V], counts D0, counts D1)."""
    prepare_modulators(ctx, guard, (k, ref))
    codes = scan_codes(ctx, k, ref)
    vpi_nom, volts, got = pg_drive_scan(ctx, guard, k, n_points, periods,
                                        lambda: constant_code_clicks(ctx, t_pt, codes, (k, ref)))
    n = np.asarray(got, dtype=np.float64).reshape(n_points, 2)
    return vpi_nom, volts, n[:, 0], n[:, 1]


def ideal_gain_quantity_value(pm: Any, vpi: float, e_vpi: float) -> tuple[float, float]:
    """The amplifier gain [dB] with G·w0 = Vπ/2 for the measured Vπ, and its uncertainty
    (20/ln 10 · σ_Vπ/Vπ)."""
    return float(pm.ideal_gain_db(vpi)), 20.0 / math.log(10.0) * e_vpi / vpi


__all__ = ["ConstantCodes", "constant_code_clicks", "constant_code_tags", "ideal_gain_quantity_value", "linear_counts", "loop_truth",
           "played_pair_slots", "Segment", "slots_of_tags", "pg_drive_scan", "pg_driven", "pg_fringe_scan", "prepare_modulators", "scan_codes",
           "scheduled_reference", "signal_code", "vacuum_code"]
