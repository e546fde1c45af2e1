"""The emulated-hardware station end to end (issue 17 acceptance): ``labqfl acquire`` on
examples/station_emulated_hardware.toml (cut to one pair, ideal detectors) streams each client's
CSPRNG choices through ModulationStreamer → SwabianPulseStreamer → the vendor client → the Pulse
Streamer emulators; the simulated loop is driven by what the emulators played, the real Swabian Time
Tagger driver records it through its emulated SDK (the laser: the PRO8000 driver on its pyvisa-sim
device), slotting anchors on the frame markers, and ``labqfl distill`` on the recording makes key.

Checked on one acquisition, with C1's randomness stalled for a few frames (played dark, recorded lost) and
a USB overflow of the tagger over two frames (its tags removed, OverflowBegin/End and MissedEvents records):

* the clicks per (intensity pair, phase pair) agree with the analytical model
  (labqfl.contracts.channel_model, through the pure simulator's own chi-square check
  ``check_against_model`` of tests/sim_backends/test_physics.py), counted on the frames both clients
  played, with the choices from their recorded logs;
* C1's lost frames carry less light (C1 was dark there: the loop saw what was played, not C1's log);
* the lost frames and the overflow's slots are dropped, counted slots at both ends (missing markers, lost
  tagger data), C1's recorded log refuses C1's lost frames' slots, and the keys in C1's and C2's stores
  are identical.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import threading
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from labqfl.sim_backends.analysis import slot_clicks
from labqfl.sim_backends.pulse_streamer import Wiring
from labqfl.sim_backends.recording import read_recording
from labqfl.sim_backends.stations import ideal_detectors
from typer.testing import CliRunner

import labqfl.app.acquire as app_acquire
from labqfl.cli import app
from labqfl.config import parse_station_config
from labqfl.keystore import KeyStore
from labqfl.serialize import dump_toml

pytest.importorskip("pulsestreamer")

# the module whose start_client_streams labqfl acquire calls: the application layer's Acquisition
acquire_cmd: Any = app_acquire

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "station_emulated_hardware.toml"
DURATION = 0.06  # s: 6e6 slots, 92 frames of 65 536 (the block-size rule needs 0.05 s here)
STALL_FROM, N_STALL = 40, 4  # C1's randomness stalls at frame 40 until 4 frames went out dark
OVERFLOW = (60 * 65536 + 1000, 60 * 65536 + 31000)  # slots whose clicks the tagger loses in an overflow (frame 60)


def _check_against_model() -> Any:
    """The pure simulator's chi-square check against the analytical model (one definition)."""
    path = ROOT / "tests" / "sim_backends" / "test_physics.py"
    spec = importlib.util.spec_from_file_location("_physics_checks", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.check_against_model


def simulated_detectors(d: dict[str, Any]) -> None:
    """Edit: D0/D1 simulated roles (``driver = "sim"``) instead of the Eos driver on its emulated controller
    (``simulation.emulate_detectors`` off), their nanowires' figures kept: for a station whose light is the
    lab's (a real tagger), which emulated detectors cannot see."""
    d["simulation"]["emulate_detectors"] = False
    for det in d["detectors"].values():
        for key in ("resource", "visa_library", "options", "bias_current_ua"):
            det.pop(key, None)
        det["driver"] = "sim"


def emulated_pair_station(tmp_path: Path, n_clients: int = 2, per_client_markers: bool = False,
                          emulated_detectors: bool = True) -> Path:
    """The example station cut to its first ``n_clients`` clients (pairs C1-C2, C2-C3, … in a chain) on a
    short loop (the small test station's operating point), ideal detectors (the analytical model's
    regime), emulators on fresh loopback addresses. Frame markers: the AND of all clients' markers on
    channel 4, or (``per_client_markers``) each client's on its own channel 4, 5, … Detectors: the Eos driver
    on its emulated controller, as in the example, or (not ``emulated_detectors``) simulated roles."""
    d = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    if not emulated_detectors:
        simulated_detectors(d)
    d["name"] = "emulated-pair"
    d["clients"] = d["clients"][:n_clients]
    d["loop"]["segments_km"] = [0.2] * (n_clients + 1)
    d["schedule"]["pairs"] = [[f"C{k}", f"C{k + 1}"] for k in range(1, n_clients)]
    tt = d["time_tagger"]
    tt.pop("marker_channels", None)
    tt.pop("marker_channel", None)
    if per_client_markers:
        tt["marker_channels"] = {f"C{k + 1}": 4 + k for k in range(n_clients)}
    else:
        tt["marker_channel"] = 4
    net = f"127.{random.randint(32, 254)}.{random.randint(0, 255)}"
    for k, c in enumerate(d["clients"]):
        c["insertion_loss_db"] = 0.2
        c["intensity_probs"] = [0.6, 0.2, 0.2]
        c["basis_x_prob"] = 0.7
        c["pattern_generator"]["resource"] = f"{net}.{k + 1}"
        # the emulators sit on loopback in this process, not behind gigabit Ethernet: every frame fresh
        c["pattern_generator"]["options"].update(dark_frames_between=0, link_bytes_per_s=1e9)
    ideal_detectors(d)
    parse_station_config(d, "emulated-pair")  # valid before it is written
    p = tmp_path / "emulated_pair.toml"
    p.write_text(dump_toml(d), encoding="utf-8")
    return p


class StalledLog:
    """C1's choice log whose frame STALL_FROM comes only after N_STALL frames were played dark in its
    place (a stalled QRNG); every other frame on time."""

    def __init__(self, log: Any) -> None:
        self.log, self.client = log, log.client
        self.streams: Any = None
        self.ready = threading.Event()

    def _stalled_enough(self) -> bool:
        st = self.streams.streamers[self.client] if self.streams is not None else None
        return st is not None and (st.late_frames >= N_STALL or st.done)

    def fill_codes(self, s0: int, out: np.ndarray) -> None:
        if s0 == STALL_FROM * 65536:
            self.ready.wait(30)
            deadline = 600
            while not self._stalled_enough() and deadline:  # waits on the streamer's state, bounded
                threading.Event().wait(0.05)
                deadline -= 1
        self.log.fill_codes(s0, out)


@pytest.mark.slow
def test_emulated_station_matches_the_model_and_distils_identical_keys(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    station_file = emulated_pair_station(tmp_path)
    cfg = parse_station_config(tomllib.loads(station_file.read_text()), str(station_file))
    data_dir = tmp_path / "data"
    rec_path = tmp_path / "rec.h5"
    real_start = acquire_cmd.start_client_streams
    stalled: list[StalledLog] = []

    def start_with_stall(station: Any, logs: dict[str, Any], duration: float) -> Any:
        s = StalledLog(logs["C1"])
        stalled.append(s)
        streams = real_start(station, {**logs, "C1": s}, duration, max_wait_s=0.2)
        s.streams = streams
        s.ready.set()
        return streams

    monkeypatch.setattr(acquire_cmd, "start_client_streams", start_with_stall)
    import labqfl.station as station_mod
    from labqfl.qkd.slotting import SlottingParams

    assert cfg.simulation.emulate_time_tagger and cfg.time_tagger.driver == "SwabianTimeTagger"
    assert cfg.simulation.emulate_detectors and {d.driver for d in cfg.detectors.values()} == {"SingleQuantumEos"}
    sp = SlottingParams.from_config(cfg)
    lost_ps = tuple(int(s * sp.period_ps) + sp.delays_ps[0] for s in OVERFLOW)
    real_sdk = station_mod.emulated_tagger_sdk

    def sdk_with_overflow(config: Any, light: Any = None) -> Any:  # the emulated instrument overflows once
        sdk = real_sdk(config, light)
        sdk.overflow_intervals_ps = [lost_ps]
        return sdk

    monkeypatch.setattr(station_mod, "emulated_tagger_sdk", sdk_with_overflow)
    runner = CliRunner()
    r = runner.invoke(app, ["acquire", "--config", str(station_file), "--duration", str(DURATION), "--out", str(rec_path),
                            "--data-dir", str(data_dir), "--json"])
    assert r.exit_code == 0, r.output
    acq = json.loads(r.stdout)
    n_frames = math.ceil(DURATION * 1e8 / 65536)
    assert acq["count_rates_hz"]["marker"] > 0  # the frame markers reached the tagger (named, not "4")
    lost_c1 = stalled[0].streams.records["C1"].lost
    lost_in_acq = [f for f in lost_c1 if f < n_frames]
    assert lost_in_acq == list(range(STALL_FROM, STALL_FROM + len(lost_in_acq))) and len(lost_in_acq) >= N_STALL
    assert [f for f in stalled[0].streams.records["C2"].lost if f < n_frames] == []
    assert acq["modulation"]["C1"] == {"frames": n_frames, "played": n_frames - len(lost_in_acq),
                                       "lost": len(lost_in_acq), "late": len(lost_in_acq), "error": None}
    assert acq["modulation"]["C2"]["lost"] == 0

    # -- statistics: the frames both clients played, choices from the recorded (played-only) logs ------
    with read_recording(rec_path) as rec:
        logs = {c: rec.client_log(c, data_dir) for c in ("C1", "C2")}
        tags = list(rec.blocks())
    lost = np.concatenate([b.lost_intervals_ps for b in tags])  # the driver's overflow records, recorded
    assert lost[:, 0].min() == lost_ps[0] and lost[:, 1].max() == lost_ps[1]
    with pytest.raises(ValueError, match="not played"):
        logs["C1"].choices(np.array([STALL_FROM * 65536 + 5]))
    slots_l, outc_l = zip(*(slot_clicks(b, cfg) for b in tags), strict=True)
    slots, outc = np.concatenate(slots_l), np.concatenate(outc_l)
    n_total = int(round(DURATION * 1e8))
    n_valid = n_total - 1000  # clicks of the last slots may fall after the end
    all_s = np.arange(n_valid, dtype=np.int64)
    both = logs["C1"].record.slot_mask(all_s) & logs["C2"].record.slot_mask(all_s)
    both[OVERFLOW[0] - 100:OVERFLOW[1] + 100] = False  # the overflow's slots left out
    keep = (slots >= 0) & (slots < n_valid)
    slots, outc = slots[keep], outc[keep]
    in_both = both[slots]
    # C1 dark in its lost frames: fewer clicks per slot there than where both played
    lost_slots = ~both
    rate_both = np.count_nonzero(in_both) / np.count_nonzero(both)
    rate_lost = np.count_nonzero(~in_both) / np.count_nonzero(lost_slots)
    assert rate_lost < 0.8 * rate_both
    s_ok, o_ok, valid = slots[in_both], outc[in_both], all_s[both]
    ri, rj = logs["C1"].choices(valid), logs["C2"].choices(valid)
    n = np.zeros((3, 3, 4, 4), dtype=np.int64)
    np.add.at(n, (ri.intensity_idx, rj.intensity_idx, ri.phase_idx, rj.phase_idx), 1)
    ci, cj = logs["C1"].choices(s_ok), logs["C2"].choices(s_ok)
    counts = np.zeros((3, 3, 4, 4, 4), dtype=np.int64)
    np.add.at(counts, (ci.intensity_idx, cj.intensity_idx, ci.phase_idx, cj.phase_idx, o_ok), 1)
    counts[..., 0] = n - counts[..., 1:].sum(axis=-1)
    _check_against_model()(cfg, counts, n)

    # -- distil: key on the pair, lost frames dropped and counted at both ends, identical keys -------------
    r = runner.invoke(app, ["distill", str(rec_path), "--data-dir", str(data_dir), "--out", str(tmp_path / "runs"),
                            "--json"])
    assert r.exit_code == 0, r.output
    dist = json.loads(r.stdout)
    pair = dist["pairs"]["C1-C2"]
    assert pair["final_key_bits"] > 0 and pair["delivered_bits"] > 0
    assert dist["slotting"]["missing_markers"] >= 1 and dist["slotting"]["lost_intervals"] >= 1
    assert OVERFLOW[1] - OVERFLOW[0] <= dist["slotting"]["dropped_slots_lost_data"] <= OVERFLOW[1] - OVERFLOW[0] + 2
    assert pair["dropped_slots"] >= len(lost_in_acq) * 65536 + OVERFLOW[1] - OVERFLOW[0]
    s1, s2 = KeyStore.for_node("C1", data_dir), KeyStore.for_node("C2", data_dir)
    try:
        nbits = s1.available_bits("C1-C2", "general")
        assert nbits > 0
        k1 = s1.take("C1-C2", nbits, "general")
        k2 = s2.take_exact("C1-C2", k1.refs, "general")
        assert np.array_equal(k1.bits, k2.bits)
    finally:
        s1.close()
        s2.close()


@pytest.mark.slow
def test_per_client_markers_drop_a_stalled_clients_frames_only_on_its_pairs(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Three clients, pairs C1-C2 and C2-C3 (even frames C1-C2, odd frames C2-C3), each client's marker on
    its own tagger input (``time_tagger.marker_channels``). C1's randomness stalls for a few frames: its
    emulator plays them dark, so its marker input misses them; C1-C2 drops its frames there, C2-C3 keeps
    every one of its frames (also those in C1's gap), and both pairs' keys are identical at both ends."""
    station_file = emulated_pair_station(tmp_path, n_clients=3, per_client_markers=True)
    data_dir = tmp_path / "data"
    rec_path = tmp_path / "rec.h5"
    duration = 0.12  # 183 frames: ~6e6 slots per pair, as the one-pair test above
    real_start = acquire_cmd.start_client_streams
    stalled: list[StalledLog] = []

    def start_with_stall(station: Any, logs: dict[str, Any], duration_s: float) -> Any:
        s = StalledLog(logs["C1"])
        stalled.append(s)
        streams = real_start(station, {**logs, "C1": s}, duration_s, max_wait_s=0.2)
        s.streams = streams
        s.ready.set()
        return streams

    monkeypatch.setattr(acquire_cmd, "start_client_streams", start_with_stall)
    runner = CliRunner()
    r = runner.invoke(app, ["acquire", "--config", str(station_file), "--duration", str(duration), "--out",
                            str(rec_path), "--data-dir", str(data_dir), "--json"])
    assert r.exit_code == 0, r.output
    acq = json.loads(r.stdout)
    n_frames = math.ceil(duration * 1e8 / 65536)
    lost_c1 = [f for f in stalled[0].streams.records["C1"].lost if f < n_frames]
    assert lost_c1 == list(range(STALL_FROM, STALL_FROM + len(lost_c1))) and len(lost_c1) >= N_STALL
    assert acq["modulation"]["C2"]["lost"] == acq["modulation"]["C3"]["lost"] == 0
    # each client's marker input: C1's misses its lost frames, C2's and C3's have every frame
    with read_recording(rec_path) as rec:
        ch = np.concatenate([b.channels for b in rec.blocks()])
    assert np.count_nonzero(ch == 5) == np.count_nonzero(ch == 6) == n_frames
    assert np.count_nonzero(ch == 4) == n_frames - len(lost_c1)

    r = runner.invoke(app, ["distill", str(rec_path), "--data-dir", str(data_dir), "--out", str(tmp_path / "runs"),
                            "--json"])
    assert r.exit_code == 0, r.output
    dist = json.loads(r.stdout)
    # C1's gap (frames first..last, and the one before it, whose closing marker is missing) on the even frames
    gap = range(lost_c1[0] - 1, lost_c1[-1] + 1)
    assert dist["pairs"]["C1-C2"]["dropped_slots"] == sum(65536 for f in gap if f % 2 == 0)
    assert dist["pairs"]["C2-C3"]["dropped_slots"] == 0
    assert dist["slotting"]["missing_markers"] == len(lost_c1)
    for pair, (a, b) in (("C1-C2", ("C1", "C2")), ("C2-C3", ("C2", "C3"))):
        assert dist["pairs"][pair]["final_key_bits"] > 0, pair
        sa, sb = KeyStore.for_node(a, data_dir), KeyStore.for_node(b, data_dir)
        try:
            nbits = sa.available_bits(pair, "general")
            assert nbits > 0
            ka = sa.take(pair, nbits, "general")
            kb = sb.take_exact(pair, ka.refs, "general")
            assert np.array_equal(ka.bits, kb.bits)
        finally:
            sa.close()
            sb.close()


def test_emulator_wiring_defaults_are_the_drivers() -> None:
    """The emulated modulators read the outputs the driver writes by default (one wiring, two copies)."""
    from labqfl.drivers.swabian_pulsestreamer import SwabianPulseStreamerOptions

    o, w = SwabianPulseStreamerOptions(), Wiring()
    assert (o.marker_channel, tuple(o.phase_channels), tuple(o.intensity_channels)) == \
        (w.marker_channel, w.phase_channels, w.intensity_channels)


def test_played_levels_are_sampled_at_slot_centres() -> None:
    """The simulated loop's read-out of a played segment (whole-slot steps read by repetition; any other
    segment searched step by step) equals sampling every slot centre (``slot_levels``), for any window."""
    from labqfl.sim_backends.pulse_streamer import PULSE_DTYPE, PlayedSegment, _sample, slot_levels

    rng = np.random.default_rng(5)
    digi = rng.integers(0, 256, 5000).astype(np.uint8)
    change = np.flatnonzero(np.diff(digi)) + 1
    starts = np.concatenate([[0], change])
    steps = np.zeros(starts.size, dtype=PULSE_DTYPE)
    steps["count"] = np.diff(np.concatenate([starts, [digi.size]])) * 10
    steps["digi"] = digi[starts]
    for start, played in ((1000, 50_000), (1000, 31_234)):
        seg = PlayedSegment(start, 0, steps, 1, played, played == 50_000)
        ref = slot_levels(seg, 10)
        for t_from, t_to in ((0, 10**9), (1000 + 12_340, 1000 + 20_000), (1000 + 12_345, 1000 + 20_007)):
            n0, d = _sample(seg, t_from, t_to, 1000, 10)
            k0 = -(-(t_from - 1000 - 5) // 10) if t_from > 1000 else 0
            assert n0 == k0 and np.array_equal(d, ref[k0:k0 + d.size]) and d.size > 0
        # an origin off the segment's grid (slot centres fall elsewhere in each step): the step search
        n0, d = _sample(seg, 0, 10**9, 997, 10)
        centres = 997 + np.arange(n0, n0 + d.size) * 10 + 5 - start
        assert np.array_equal(d, digi[centres // 10])
