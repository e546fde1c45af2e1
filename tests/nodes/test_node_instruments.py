"""Over node processes each node opens the real instruments of the station roles it owns (issue 17; docs/nodes.md,
"Which node opens which instrument"): the detection node the master clock, laser, detectors and power meter, each
client its own modulators (and its pattern generator). They get what the in-process Station and Acquisition send
them (operating point on open, armed for an acquisition, safe state after it, on SIGTERM and at exit).

The emulated instruments are served from this test process (pyvisa-sim devices behind loopback TCP, the WebSQ
and Pulse Streamer emulators), so what they were sent and the state they are left in outlive the node processes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import signal
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labqfl.config import load_station_config, parse_station_config
from labqfl.errors import ConfigError
from labqfl.keystore import KeyStore
from labqfl.nodes.common import NodeError, NodeInstruments, check_node_station, owned_roles
from labqfl.serialize import dump_toml

ROOT = Path(__file__).resolve().parents[2]
VISA = ROOT / "sim_backends" / "visa"
LABQFL = Path(sys.executable).with_name("labqfl")
PAIR = "C1-C2"
EARLIER = "earlier-run-block"
needs_pyvisa_py = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                     reason="pyvisa-py (the 'hardware' extra) is not installed")
PY = {"visa_library": "@py", "timeout_ms": 5000}


class Bench:
    """Emulated instruments served from this process over loopback: a Thorlabs PRO8000 laser (pyvisa-sim), a
    Single Quantum Eos SNSPD controller (two channels), a Pulse Streamer as master clock, a Keysight 33500B
    driving C1's phase modulator and one Keysight N7764A VOA whose channels 1 and 3 are C1's and C2's
    attenuators; with ``generator``, a Pulse Streamer as C1's pattern generator."""

    def __init__(self, *, generator: bool = False) -> None:
        from labqfl.sim_backends.pulse_streamer import PulseStreamerEmulator
        from labqfl.sim_backends.visa_tcp import VisaSimTCPServer
        from labqfl.sim_backends.websq import WebSQEmulator

        self.laser = VisaSimTCPServer(VISA / "thorlabs_pro8000.yaml", "GPIB0::10::INSTR")
        self.awg = VisaSimTCPServer(VISA / "keysight_33500b.yaml", "TCPIP0::10.0.0.11::inst0::INSTR")
        self.voa = VisaSimTCPServer(VISA / "keysight_n7764a.yaml", "TCPIP0::10.0.0.21::inst0::INSTR")
        self.snspd = WebSQEmulator(2)
        self.clock = PulseStreamerEmulator()
        self.pg = PulseStreamerEmulator() if generator else None

    def detection(self, d: dict[str, Any]) -> dict[str, Any]:
        """The detection side of station dict ``d`` on these emulators (the tagger stays simulated)."""
        d["laser"].update(driver="ThorlabsPRO8000", resource=self.laser.resource, **PY,
                          options={"ld_slot": 1, "tec_slot": 2, "slope_mw_per_ma": 0.1, "threshold_ma": 10.0,
                                   "max_current_ma": 100.0, "ramp_step_ma": 5.0, "ramp_ma_per_s": 1000.0})
        for det, ch, bias in (("D0", 1, 4.0), ("D1", 2, 3.0)):
            d["detectors"][det].update(driver="SingleQuantumEos", resource=self.snspd.resource, **PY,
                                       bias_current_ua=bias,
                                       options={"channel": ch, "counts_port": self.snspd.counts_port,
                                                "bias_step_ua": 1.0, "bias_ramp_ua_per_s": 200.0})
        d["master_clock"] = {"driver": "SwabianPulseStreamerClock", "resource": self.clock.ip}
        d.setdefault("simulation", {})["emulate_detectors"] = False  # this bench's controller, not the node's own
        return d

    def modulators(self, d: dict[str, Any]) -> dict[str, Any]:
        """C1's phase modulator and C1's and C2's attenuators of station dict ``d`` on these emulators; C1's
        pattern generator too when this bench has one (one frame per upload, 1000-slot frames)."""
        d["clients"][0]["phase_modulator"].update(driver="Keysight33500B", resource=self.awg.resource, **PY,
                                                  options={"channel": 1, "sample_rate_hz": 100e6})
        for k, ch in ((0, 1), (1, 3)):
            d["clients"][k]["attenuator"].update(driver="KeysightN7764A", resource=self.voa.resource, **PY,
                                                 max_attenuation_db=45.0, options={"channel": ch, "attenuation_db": 20.0})
        if self.pg is not None:
            d["clients"][0]["pattern_generator"] = {"driver": "SwabianPulseStreamer", "resource": self.pg.ip,
                                                    "options": {"frames_per_upload": 1, "link_bytes_per_s": 1e9}}
            d["time_tagger"]["frame_slots"] = 1000
        return d

    def sent(self) -> dict[str, list[Any]]:
        """What every instrument was sent, so far (the SNSPD's commands without their serial numbers)."""
        return {"laser": list(self.laser.received), "awg": list(self.awg.received), "voa": list(self.voa.received),
                "snspd": [{k: v for k, v in m.items() if k != "id"} for m in self.snspd.received],
                "clock": list(self.clock.requests)}

    def assert_safe(self, since: dict[str, list[Any]], *, modulators: bool = True) -> None:
        """Laser off after a stepwise ramp to 0 mA, detector bias ramped down with the detectors disabled, the
        master clock (and C1's generator) dark; with ``modulators``, C1's modulator output off and both
        attenuators' shutters closed: each sent after ``since``."""
        after = self.laser.received[len(since["laser"]):]
        assert self.laser.ask(":LASER?") == "OFF" and ":LASER OFF" in after
        ramp = [float(c.split()[1]) for c in after[:after.index(":LASER OFF")] if c.startswith(":ILD:SET ")]
        assert ramp and ramp[-1] == 0.0  # at 0 mA before the laser driver went off
        s = self.snspd.state()
        assert s["enabled"] is False and s["bias_ua"] == [0.0, 0.0]
        hist = self.snspd.bias_history
        assert max(abs(a - b) for h0, h1 in zip(hist, hist[1:], strict=False) for a, b in zip(h0, h1, strict=True)) <= 1.0
        for ch in (1, 3) if modulators else ():
            assert self.voa.ask(f":OUTP{ch}:STAT?") == "0"
            assert f":OUTP{ch}:STAT 0" in self.voa.received[len(since["voa"]):]
        if modulators:
            assert self.awg.ask("OUTP1?") == "0" and "OUTP1 0" in self.awg.received[len(since["awg"]):]
        for em in filter(None, (self.clock, self.pg)):
            assert em.playing is None and em.output == (0, 0, 0)
            assert em.constants and em.constants[-1][1] == (0, 0, 0)

    def close(self) -> None:
        for s in (self.laser, self.awg, self.voa, self.snspd, self.clock, self.pg):
            if s is not None:
                s.close()


@pytest.fixture
def bench_factory() -> Iterator[Any]:
    made: list[Bench] = []

    def make(**kw: Any) -> Bench:
        made.append(Bench(**kw))
        return made[-1]

    yield make
    for b in made:
        b.close()


def _small(small_station_file: Path) -> dict[str, Any]:
    return tomllib.loads(small_station_file.read_text(encoding="utf-8"))


# -- which node owns which role ---------------------------------------------------------------------------------
def test_the_detection_node_owns_source_clock_and_detectors_each_client_its_modulators() -> None:
    cfg = load_station_config(ROOT / "examples" / "station_pyvisa_sim.toml")
    assert owned_roles(cfg, "detector", "detector") == ["laser", "D0", "D1", "time_tagger", "power_meter"]
    assert owned_roles(cfg, "client", "C2") == ["C2.phase_modulator", "C2.attenuator"]
    assert owned_roles(cfg, "optics", "optics") == [] and owned_roles(cfg, "server", "server") == []
    emulated = load_station_config(ROOT / "examples" / "station_emulated_hardware.toml")
    assert owned_roles(emulated, "client", "C3") == ["C3.phase_modulator", "C3.attenuator", "C3.pattern_generator"]
    everyone = [r for n in ("detector", *emulated.client_names)
                for r in owned_roles(emulated, "client" if n != "detector" else "detector", n)]
    assert sorted(everyone) == sorted(emulated.roles())  # every role has exactly one owner
    # simulated roles are the optics node's: nothing to open on the default station
    default = load_station_config()
    assert NodeInstruments("detector", default, owned_roles(default, "detector", "detector"), None).roles == []


def test_a_real_time_tagger_over_nodes_without_a_pattern_generator_per_client_is_refused_before_any_process_starts(
        small_station_file: Path, tmp_path: Path) -> None:
    from labqfl.nodes.launch import LocalNetwork

    d = _small(small_station_file)
    d["time_tagger"]["driver"] = "SwabianTimeTagger"
    cfg = parse_station_config(d, "tagger.toml")
    with pytest.raises(ConfigError) as e:
        check_node_station(cfg, "tagger.toml")
    msg = str(e.value)
    assert "\n" not in msg and "field 'clients.<k>.pattern_generator'" in msg and "'SwabianTimeTagger'" in msg
    assert "clients without one: ['C1', 'C2']" in msg
    path = tmp_path / "tagger.toml"
    path.write_text(dump_toml(d), encoding="utf-8")
    with pytest.raises(ConfigError, match="pattern_generator"):
        LocalNetwork(tmp_path / "net", path)
    assert not (tmp_path / "net").exists()  # no certificate, no process
    check_node_station(load_station_config(small_station_file))  # the simulated tagger is fine
    d["simulation"]["emulate_time_tagger"] = True  # and so is the Swabian driver on its emulated SDK
    check_node_station(parse_station_config(d, "tagger.toml"))


# -- the same commands as in process ------------------------------------------------------------------------
def _in_process(bench: Bench, d: dict[str, Any]) -> dict[str, list[Any]]:
    """What the in-process path sends: the Station opens every role (operating point), the Acquisition arms
    them and puts them in their safe state, the Station closes."""
    from labqfl.app.station import arm
    from labqfl.station import Station

    st = Station(parse_station_config(d, "bench"), guard=False)
    try:
        assert arm(st)
        assert not st.safe_state()
    finally:
        st.close()
    return bench.sent()


def _over_nodes(bench: Bench, d: dict[str, Any]) -> dict[str, list[Any]]:
    """What the detection node and the client nodes send over an acquisition (NodeInstruments, in this
    process), each node's roles opened, armed, disarmed and closed as node processes do."""
    cfg = parse_station_config(d, "bench")
    nodes = [NodeInstruments(n, cfg, owned_roles(cfg, "detector" if n == "detector" else "client", n), None)
             for n in ("detector", "C1", "C2")]
    try:
        for n in nodes:
            n.open()
        for n in nodes:
            n.arm()
        for n in nodes:
            assert not n.disarm()
    finally:
        for n in nodes:
            n.close()
    return bench.sent()


def _by_channel(commands: list[str]) -> dict[str, Any]:
    """A multi-channel instrument's commands: per channel k (``:INPk``/``:OUTPk``) in order, the others counted."""
    out: dict[str, Any] = {ch: [c for c in commands if f"INP{ch}:" in c or f"OUTP{ch}:" in c] for ch in (1, 3)}
    out["other"] = sorted(c for c in commands if not any(c in out[ch] for ch in (1, 3)))
    return out


@needs_pyvisa_py
def test_every_emulated_instrument_gets_the_commands_the_in_process_station_sends(
        bench_factory: Any, small_station_file: Path) -> None:
    """Fresh emulators for each path; per instrument the command sequences are equal: operating point (laser
    current ramped up, detector bias, AWG and VOA setup, the clock's rate and reference), arming (laser on,
    detectors enabled, modulator output on, shutters open), safe state, close."""
    a = bench_factory()
    in_process = _in_process(a, a.modulators(a.detection(_small(small_station_file))))
    b = bench_factory()
    over_nodes = _over_nodes(b, b.modulators(b.detection(_small(small_station_file))))
    for inst in ("laser", "awg", "snspd", "clock"):
        assert in_process[inst], inst
        assert over_nodes[inst] == in_process[inst], inst
    # the VOA's channels 1 and 3 are two clients' roles: one shared session in process, one session per
    # client node over nodes; each channel gets the same commands, the two sessions interleave differently
    assert _by_channel(over_nodes["voa"]) == _by_channel(in_process["voa"])
    assert over_nodes["laser"].index(":LASER ON") < over_nodes["laser"].index(":LASER OFF")
    assert "OUTP1 1" in over_nodes["awg"] and ":OUTP3:STAT 1" in over_nodes["voa"]
    b.assert_safe({k: [] for k in over_nodes})


@needs_pyvisa_py
def test_arming_is_counted_and_a_stopping_node_arms_nothing(bench_factory: Any, small_station_file: Path) -> None:
    b = bench_factory()
    cfg = parse_station_config(b.detection(_small(small_station_file)), "bench")
    det = NodeInstruments("detector", cfg, owned_roles(cfg, "detector", "detector"), None)
    det.open()
    try:
        assert b.laser.ask(":LASER?") == "OFF" and b.snspd.state()["enabled"] is False  # open: outputs off
        assert b.clock.playing is None  # open: the laser trigger off
        # the detectors first, biased in the dark (review s36 lab2 L2), then the trigger and the laser
        assert det.arm() == ["D0.enabled=True", "D1.enabled=True", "master_clock.output_enabled=True",
                             "laser.output_enabled=True"]
        assert b.clock.playing is not None  # armed: the master clock triggers the laser
        assert det.arm() == []  # a second acquisition armed meanwhile: nothing to change
        det.disarm()
        assert b.laser.ask(":LASER?") == "ON"  # the other acquisition still runs
        det.disarm()
        assert b.laser.ask(":LASER?") == "OFF" and b.snspd.state()["bias_ua"] == [0.0, 0.0]
        det.arm()
        det.stop()  # SIGTERM while armed: safe at once
        assert b.laser.ask(":LASER?") == "OFF" and b.snspd.state()["enabled"] is False
        with pytest.raises(NodeError, match="stopping"):
            det.arm()
    finally:
        det.close()
        det.close()
    assert all(inst.closed for inst in det.instruments.values())


@needs_pyvisa_py
def test_sigint_of_a_detection_node_and_a_plain_exit_leave_its_instruments_safe(
        kill: Any, bench_factory: Any, small_station_file: Path, tmp_path: Path) -> None:
    """SIGINT to ``labqfl node detector`` (laser on, detectors armed as during an acquisition): safe state, then
    a clean exit (0). A process that armed its NodeInstruments and ends without closing them: the ``atexit``
    hook leaves them safe."""
    from labqfl.net import make_node_certs

    b = bench_factory()
    station = tmp_path / "bench.toml"
    station.write_text(dump_toml(b.detection(_small(small_station_file))), encoding="utf-8")
    make_node_certs(tmp_path / "certs", ["detector", "ctl"])

    def on() -> dict[str, list[Any]]:  # what an acquisition leaves: laser on, detectors armed
        b.laser.ask(":LASER ON")
        b.snspd.handle({"command": "DetectorEnable", "label": "DetectorEnable", "value": True})
        b.snspd.handle({"command": "SetAllBiasCurrents", "label": "BiasCurrent", "value": [4.0, 3.0]})
        assert b.laser.ask(":LASER?") == "ON"
        return b.sent()

    with kill.running([sys.executable, "-m", "labqfl.nodes", "detector", "--name", "detector", "--data",
                       str(tmp_path / "det"), "--listen", "127.0.0.1:0", "--certs", str(tmp_path / "certs"),
                       "--station", str(station)]) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("NODE detector "), line + proc.communicate()[1][-kill.TAIL:]
        since = on()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-kill.TAIL:]
    b.assert_safe(since, modulators=False)
    cmd = kill.holding(tmp_path, f"""
        from labqfl.config import load_station_config
        from labqfl.nodes.common import NodeInstruments, owned_roles
        cfg = load_station_config({str(station)!r})
        det = NodeInstruments("detector", cfg, owned_roles(cfg, "detector", "detector"), None)
        det.open()
        det.arm()
    """)
    with kill.running(cmd, stdin=True) as proc:
        kill.wait_ready(proc)
        assert b.laser.ask(":LASER?") == "ON"
        since = b.sent()
        _, err = proc.communicate(input="", timeout=60)  # stdin closed: the script ends without closing them
    assert proc.returncode == 0, err[-kill.TAIL:]
    b.assert_safe(since, modulators=False)


def test_a_role_that_fails_to_open_is_named_and_what_opened_is_closed(small_station_file: Path) -> None:
    d = _small(small_station_file)
    d["laser"].update(driver="ThorlabsPRO8000", resource="GPIB0::10::INSTR", visa_library="@sim:thorlabs_pro8000.yaml",
                      options={"ld_slot": 1, "tec_slot": 2, "slope_mw_per_ma": 0.1, "threshold_ma": 10.0,
                               "max_current_ma": 100.0})
    d["power_meter"].update(driver="ThorlabsPM100USB", resource="USB0::0x1313::0x8072::NOSUCH::INSTR",
                            visa_library="@sim:thorlabs_pm100usb.yaml")
    cfg = parse_station_config(d, "bench")
    det = NodeInstruments("detector", cfg, owned_roles(cfg, "detector", "detector"), None)
    with pytest.raises(NodeError) as e:
        det.open()
    assert "role 'power_meter' (ThorlabsPM100USB at 'USB0::0x1313::0x8072::NOSUCH::INSTR') failed to open" in str(e.value)
    assert det.instruments["laser"].closed


def test_a_relative_pyvisa_sim_file_is_found_by_the_nodes_of_a_labqfl_run(small_station_file: Path,
                                                                          tmp_path: Path) -> None:
    """``visa_library = "devices/….yaml@sim"`` is relative to the station file's folder (docs/instruments.md);
    ``labqfl run`` hands its nodes the station from a temporary folder, with such paths made absolute."""
    import shutil

    from labqfl.nodes.runjob import station_for_nodes

    bench_dir = tmp_path / "bench"
    (bench_dir / "devices").mkdir(parents=True)
    shutil.copyfile(VISA / "thorlabs_pro8000.yaml", bench_dir / "devices" / "laser.yaml")
    d = _small(small_station_file)
    d["laser"].update(driver="ThorlabsPRO8000", resource="GPIB0::10::INSTR", visa_library="devices/laser.yaml@sim",
                      options={"ld_slot": 1, "tec_slot": 2, "slope_mw_per_ma": 0.1, "threshold_ma": 10.0,
                               "max_current_ma": 100.0})
    cfg = parse_station_config(d, "bench.toml")
    work = tmp_path / "work"  # where the job writes the nodes' station file
    work.mkdir()
    (work / "station.toml").write_text(station_for_nodes(cfg, bench_dir), encoding="utf-8")
    moved = load_station_config(work / "station.toml")
    assert moved.laser.visa_library == f"{(bench_dir / 'devices' / 'laser.yaml').resolve()}@sim"
    det = NodeInstruments("detector", moved, owned_roles(moved, "detector", "detector"), work)
    try:
        det.open()
        assert det.arm() == ["laser.output_enabled=True"]
    finally:
        det.close()


# -- labqfl run over node processes ------------------------------------------------------------------------------
def _emulated_pair(bench: Bench, tmp_path: Path) -> Path:
    """examples/station_emulated_hardware.toml cut to one pair (tests/modulation/test_emulated_station.py), its
    laser, detectors and master clock on this bench's emulators, its time tagger the Swabian driver on the
    emulated SDK fed by the optics node's loop (labqfl.sim_backends.timetagger_sdk)."""
    spec = importlib.util.spec_from_file_location("_emulated_station", ROOT / "tests" / "modulation" /
                                                  "test_emulated_station.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    d = bench.detection(tomllib.loads(mod.emulated_pair_station(tmp_path).read_text(encoding="utf-8")))
    d["time_tagger"]["driver"] = "SwabianTimeTagger"
    d["simulation"]["emulate_time_tagger"] = True
    p = tmp_path / "emulated_pair_bench.toml"
    p.write_text(dump_toml(d), encoding="utf-8")
    return p


@needs_pyvisa_py
@pytest.mark.slow
def test_labqfl_run_over_nodes_on_the_emulated_pair_station_gives_identical_keys(bench_factory: Any,
                                                                                  tmp_path: Path) -> None:
    """``labqfl run`` (node processes, the default) on the emulated-hardware example cut to one pair, its laser,
    detectors, master clock and time tagger also real drivers over emulators (the tagger: the Swabian driver on
    its emulated SDK, recording the optics node's loop): the client nodes stream to the Pulse Streamer
    emulators (every frame played) and open their own modulators, the detection node arms the laser and the
    detectors for the acquisition and leaves them safe, every node exits with 0, the run completes (one
    federated round over the FL nodes) and the key left is identical at both ends."""
    pytest.importorskip("pulsestreamer")
    from typer.testing import CliRunner

    from labqfl.cli import app

    b = bench_factory()
    station = _emulated_pair(b, tmp_path)
    data, runs, duration = tmp_path / "data", tmp_path / "runs", 0.05  # the block-size rule's minimum here
    r = CliRunner().invoke(app, ["run", "--config", str(station), "--duration", str(duration), "--rounds", "1",
                                 "--eps-sec", "1e-4", "--no-wait-for-key", "--data-dir", str(data), "--out", str(runs),
                                 "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    a = m["acquisition"]
    assert m["status"] == "complete" and a["path"] == "nodes" and set(a["exit_codes"].values()) == {0}
    assert len(m["train"]["rounds"]) == 1 and set(m["train"]["nodes"]["exit_codes"].values()) == {0}
    n_frames = math.ceil(duration * 1e8 / 65_536)
    for c in ("C1", "C2"):
        assert a["modulation"][c] == {"frames": n_frames, "played": n_frames, "lost": 0, "late": 0, "error": None}
    pair = m["distill"]["pairs"]["C1-C2"]
    assert pair["final_key_bits"] > 0 and pair["dropped_slots"] == 0 and pair["error_rate"]["X_key"] < 0.03
    # the detection node's counters by cause and the tagger driver's own counts reach the metrics
    assert a["slotting"]["lost_intervals"] == 0 and a["slotting"]["marker_tags"] == n_frames
    assert a["detector"]["tagger_overflows"] == 0 and a["detector"]["tagger_missed_events"] == 0
    with KeyStore.for_node("C1", data) as s1, KeyStore.for_node("C2", data) as s2:
        left = s1.available_bits("C1-C2", "general")
        assert left > 0 and s2.available_bits("C1-C2", "general") == left
        k1 = s1.take("C1-C2", left, "general")
        assert np.array_equal(k1.bits, s2.take_exact("C1-C2", k1.refs, "general").bits)
    laser = b.laser.received
    assert laser.count(":LASER ON") == 1 and laser.index(":LASER ON") < laser.index(":LASER OFF")
    assert {"command": "DetectorEnable", "value": True} in [{k: x.get(k) for k in ("command", "value")}
                                                             for x in b.snspd.received]
    b.assert_safe({"laser": []}, modulators=False)
    text = {p.stem: p.read_text(encoding="utf-8") for p in next(runs.glob("*/nodes")).glob("*.log")}
    assert "node detector: opened master_clock (SwabianPulseStreamerClock" in text["detector"]
    assert "time_tagger (SwabianTimeTagger" in text["detector"]  # the real driver, on the emulated SDK
    assert "tagger (SwabianTimeTagger): {'tagger_overflows': 0, 'tagger_missed_events': 0}" in text["detector"]
    assert "D0.enabled=True, D1.enabled=True, master_clock.output_enabled=True, laser.output_enabled=True" in text["detector"]
    for c in ("C1", "C2"):  # each client node opened its own modulators (pyvisa-sim devices in its process)
        assert f"node {c}: opened {c}.phase_modulator (GenericBitDrivenPhaseModulator" in text[c]
        assert f"{c}.attenuator (ThorlabsMBX" in text[c] and f"{c}.attenuator.output_enabled=True" in text[c]
    assert "opened" not in text["optics"]


@needs_pyvisa_py
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the node processes through /proc")
def test_sigterm_of_labqfl_run_over_nodes_leaves_every_emulated_instrument_safe(
        kill: Any, bench_factory: Any, small_station_file: Path, tmp_path: Path) -> None:
    """Issue 17's acceptance over node processes: ``labqfl run --duration 30000`` (killed long before) on a
    two-client station whose laser, detectors, master clock, C1's phase modulator and pattern generator and both
    clients' attenuators are drivers over emulators. Once the nodes acquire (laser on, detectors armed, C1's
    modulator output on, shutters open, C1's frames playing), SIGTERM to ``labqfl run`` alone: it stops its
    nodes, each puts its own instruments in their safe state (laser off, ramped; detector bias down, ramped;
    modulator output off; shutters closed; generator and master clock dark), and no node process is left.
    Issue 16's kill fault on the same run: the acquisition is marked incomplete, no block is stored or left
    pending at either end, and a block stored before (an earlier run's) is intact and equal at both ends."""
    pytest.importorskip("pulsestreamer")
    b = bench_factory(generator=True)
    station = tmp_path / "bench.toml"
    station.write_text(dump_toml(b.modulators(b.detection(_small(small_station_file)))), encoding="utf-8")
    runs, data = tmp_path / "runs", tmp_path / "data"
    earlier = np.random.default_rng(7).integers(0, 2, 4096, dtype=np.uint8)  # test data, not key material
    for c in ("C1", "C2"):
        with KeyStore.for_node(c, data) as st:
            st.add_block(PAIR, earlier, block_id=EARLIER, purpose="general", meta={"kind": "earlier-run"})
    nodes: dict[int, str] = {}

    def acquiring() -> bool:
        nodes.update(kill.node_children(proc.pid))
        started = False
        for p in runs.glob("*/state.json"):
            try:
                started = bool(json.loads(p.read_text(encoding="utf-8")).get("acquisitions"))
            except ValueError:  # being written
                return False
        return (started and len(nodes) == 4 and b.pg is not None and b.pg.playing is not None
                and b.laser.ask(":LASER?") == "ON" and b.snspd.state()["enabled"] is True
                and b.awg.ask("OUTP1?") == "1" and b.voa.ask(":OUTP1:STAT?") == "1" and b.voa.ask(":OUTP3:STAT?") == "1")

    with kill.running([str(LABQFL), "run", "--duration", "30000", "--rounds", "1", "--config", str(station),
                       "--out", str(runs), "--data-dir", str(data)]) as proc:
        kill.wait_for(acquiring, "labqfl run acquiring over its nodes, every instrument armed", proc, timeout=300)
        since = b.sent()
        err = kill.terminate(proc, timeout=120)
    assert proc.returncode != 0, err[-kill.TAIL:]  # interrupted, not complete
    b.assert_safe(since)
    alive = [n for pid, n in nodes.items() if Path(f"/proc/{pid}").exists()]
    assert not alive, f"node processes still running after the kill: {alive}"
    assert sorted(nodes.values()) == ["C1", "C2", "detector", "optics"]
    run_log = next(runs.glob("*/run.log")).read_text(encoding="utf-8")
    assert "exit codes" not in run_log, run_log[-kill.TAIL:]  # every node ended by itself with 0
    state = json.loads(next(runs.glob("*/state.json")).read_text(encoding="utf-8"))
    assert [a["complete"] for a in state["acquisitions"]] == [False]
    assert not list((data / "nodes" / "C2" / "pending").glob("*.json"))  # no block half-stored at Cj
    with KeyStore.for_node("C1", data) as s1, KeyStore.for_node("C2", data) as s2:
        assert _general_blocks(s1) == _general_blocks(s2) == [EARLIER]
        assert s1.available_bits(PAIR, "general") == s2.available_bits(PAIR, "general") == earlier.size
        k1 = s1.take(PAIR, earlier.size, "general")
        assert np.array_equal(k1.bits, earlier)
        assert np.array_equal(s2.take_exact(PAIR, k1.refs, "general").bits, earlier)


def _general_blocks(store: KeyStore) -> list[str]:
    """The pair's blocks other than the pre-shared authentication key and its refills."""
    return [b["block_id"] for b in store.blocks(PAIR) if b["meta"].get("kind") not in ("preshared-auth", "auth-refill")
            and not b["block_id"].startswith("preshared")]
