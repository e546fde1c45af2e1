"""A real time tagger on real hardware over node processes (issue 16 item 4: "with hardware drivers configured,
the same nodes run unchanged"; issue 17): the light is the lab's, so no optics node starts; each client node
streams its own CSPRNG frames to its own Pulse Streamer through the real driver (no modulator link: nothing else
tells the light a choice), the detection node records through the real Swabian driver, slots and announces, and
each pair's key is made from the frames its clients played, identical at both ends.

The lab is stood in for inside the detection node's process (a ``sitecustomize`` on its path): a simulated loop
that serves the Pulse Streamers the client nodes connect to, plays what they played, and hands its tags to the
Swabian driver through an emulated SDK module put where the vendor's SDK is imported. No other node is changed.
"""

from __future__ import annotations

import math
import os
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

from labqfl.config import parse_station_config
from labqfl.errors import ConfigError
from labqfl.nodes.common import check_node_station
from labqfl.serialize import dump_toml

ROOT = Path(__file__).resolve().parents[2]


def _real_tagger_pair(emulated_pair_station: Any) -> dict[str, Any]:
    """The emulated-hardware pair station (fixture ``emulated_pair_station``) with a real Swabian tagger and real
    generators."""
    d = tomllib.loads(emulated_pair_station(emulated_detectors=False).read_text(encoding="utf-8"))
    d["time_tagger"]["driver"] = "SwabianTimeTagger"
    d["simulation"]["emulate_time_tagger"] = False  # the tagger is the lab's (its SDK stood in for in the detector)
    d["simulation"]["emulate_pattern_generators"] = False  # the generators are the lab's, not an optics node's
    return d


def _lab_in_the_detector(folder: Path, station: Path) -> dict[str, str]:
    """Environment for the detection node: the lab stood in for (module docstring)."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        from labqfl.config import load_station_config
        from labqfl.sim_backends.testbed import SagnacTestbed
        from labqfl.sim_backends.timetagger_sdk import EmulatedTimeTaggerSDK, LightSettings
        _cfg = load_station_config({str(station)!r})
        _lab = SagnacTestbed(_cfg.model_copy(update={{"simulation": _cfg.simulation.model_copy(
            update={{"emulate_pattern_generators": True}})}}))  # serves the Pulse Streamers the clients connect to
        def _light(capture_s):  # what the generators played, never a log
            return _lab.stream_with(dict.fromkeys(_cfg.client_names), capture_s, hardware=True)
        sys.modules["Swabian.TimeTagger"] = EmulatedTimeTaggerSDK(LightSettings.from_config(_cfg), _light)
    """), encoding="utf-8")
    return {"PYTHONPATH": os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])}


def test_a_real_tagger_over_nodes_needs_every_client_on_its_own_real_pattern_generator(
        emulated_pair_station: Any) -> None:
    d = _real_tagger_pair(emulated_pair_station)
    check_node_station(parse_station_config(d, "lab.toml"), "lab.toml")  # the lab's light: accepted
    bare = {**d, "clients": [{k: v for k, v in d["clients"][0].items() if k != "pattern_generator"}, d["clients"][1]]}
    with pytest.raises(ConfigError) as e:
        check_node_station(parse_station_config(bare, "lab.toml"), "lab.toml")
    assert "\n" not in str(e.value) and "clients without one: ['C1']" in str(e.value)
    emulated = {**d, "simulation": {**d["simulation"], "emulate_pattern_generators": True}}
    with pytest.raises(ConfigError, match="field 'simulation.emulate_pattern_generators'.*no optics node"):
        check_node_station(parse_station_config(emulated, "lab.toml"), "lab.toml")


@pytest.mark.slow
def test_with_a_real_tagger_the_nodes_run_without_an_optics_node_and_hold_identical_keys(
        tmp_path: Path, identical_keys: Any, emulated_pair_station: Any) -> None:
    from labqfl.nodes.launch import LocalNetwork
    from labqfl.qkd.pipeline import DistillSettings

    station = tmp_path / "lab.toml"
    d = _real_tagger_pair(emulated_pair_station)
    station.write_text(dump_toml(d), encoding="utf-8")
    cfg = parse_station_config(d, str(station))
    duration = 0.06
    net = LocalNetwork(tmp_path / "net", station, settings=DistillSettings(min_final_block_bits=2000),
                       env={"detector": _lab_in_the_detector(tmp_path / "lab", station)})
    try:
        net.start()
        assert set(net.nodes) == {"detector", "C1", "C2"}  # no optics node: the light is the lab's
        res = net.acquire(duration, timeout=300)
    finally:
        codes = net.stop()
    assert codes == dict.fromkeys(codes, 0)
    n = math.ceil(duration * cfg.laser.rep_rate_hz / cfg.schedule.slots_per_frame)
    for c in ("C1", "C2"):
        cl = res["clients"][c]
        assert cl["modulation"] == {"frames": n, "played": n, "lost": 0, "late": 0, "error": None}
        assert cl["answered_slots"] == 0 and cl["modulator_link_error"] == ""  # no link: nobody asked a choice
    det = res["detector"]
    assert det["tagger_overflows"] == 0 and det["tagger_missed_events"] == 0 and det["dropped"] == 0
    pair = res["pairs"]["C1-C2"]
    assert pair["failed"] == "" and pair["done"] and pair["aborted_blocks"] == 0
    assert pair["final_key_bits"] > 0 and pair["error_rate"]["X_key"] < 0.03  # ~50 % had the light other choices
    identical_keys(net.data_of("C1"), net.data_of("C2"))
    logs = (tmp_path / "net" / "logs" / "detector.log").read_text(encoding="utf-8")
    assert "time_tagger (SwabianTimeTagger at" in logs and "6000000 slots (0 dropped)" in logs
