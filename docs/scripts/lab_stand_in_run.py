"""``labqfl run`` over node processes with a real time tagger on "real hardware", the lab stood in for.

Usage: ``python docs/scripts/lab_stand_in_run.py [FOLDER] [-- extra labqfl run options]``

Builds the two-client emulated-hardware station of the tests (tests/modulation/test_emulated_station.py:
the example station cut to a chain of two clients on a short loop, fresh loopback addresses), turns its tagger
into the real ``SwabianTimeTagger`` on real hardware (``simulation.emulate_time_tagger`` and
``emulate_pattern_generators`` off, so no optics node starts and each client node streams its own CSPRNG frames
to its own Pulse Streamer), and runs the README's main command on it::

    labqfl run --config FOLDER/lab.toml --duration 0.5 --rounds 1 --no-wait-for-key --json

The lab is stood in for inside the detection node only, as in tests/nodes/test_real_tagger_nodes.py: a
``sitecustomize`` on ``PYTHONPATH`` that acts only in the process started as ``python -m labqfl.nodes detector``
puts a simulated loop behind the Pulse Streamer addresses the client nodes connect to (it plays what they played)
and an emulated ``Swabian.TimeTagger`` module where the vendor's SDK is imported. Every other node, and
``labqfl run`` itself, is unchanged; its data (key stores, run folder) go to FOLDER/data. Prints the exit code,
the nodes started and per pair the delivered key, QBER, dropped slots and the blocks' provenance. Used for
docs/lab_setup.md ("Missing"). Needs the hardware extra.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SITE = """
import sys
if sys.argv[1:2] == ["detector"]:  # python -m labqfl.nodes detector ...: the detection node only
    from labqfl.config import load_station_config
    from labqfl.sim_backends.testbed import SagnacTestbed
    from labqfl.sim_backends.timetagger_sdk import EmulatedTimeTaggerSDK, LightSettings
    _cfg = load_station_config({station!r})
    _lab = SagnacTestbed(_cfg.model_copy(update={{"simulation": _cfg.simulation.model_copy(
        update={{"emulate_pattern_generators": True}})}}))  # serves the Pulse Streamers the clients connect to
    def _light(capture_s):  # what the generators played, never a log
        return _lab.stream_with(dict.fromkeys(_cfg.client_names), capture_s, hardware=True)
    sys.modules["Swabian.TimeTagger"] = EmulatedTimeTaggerSDK(LightSettings.from_config(_cfg), _light)
"""


def build(folder: Path) -> Path:
    """The lab's station file and the detection node's stand-in under ``folder``; returns the station path."""
    spec = importlib.util.spec_from_file_location("emulated_station", ROOT / "tests/modulation/test_emulated_station.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from labqfl.serialize import dump_toml

    d = tomllib.loads(Path(mod.emulated_pair_station(folder, emulated_detectors=False)).read_text(encoding="utf-8"))
    d["time_tagger"]["driver"] = "SwabianTimeTagger"
    d["simulation"]["emulate_time_tagger"] = False
    d["simulation"]["emulate_pattern_generators"] = False
    station = folder / "lab.toml"
    station.write_text(dump_toml(d), encoding="utf-8")
    (folder / "lab").mkdir(exist_ok=True)
    (folder / "lab" / "sitecustomize.py").write_text(textwrap.dedent(SITE.format(station=str(station))), encoding="utf-8")
    return station


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = argv[:argv.index("--")] if "--" in argv else argv
    folder = Path(args[0] if args else "/tmp/lab_stand_in").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    station = build(folder)
    cmd = [str(Path(sys.executable).with_name("labqfl")), "run", "--config", str(station), "--duration", "0.5",
           "--rounds", "1", "--no-wait-for-key", "--json", *extra]
    env = {**os.environ, "PYTHONPATH": str(folder / "lab"), "LABQFL_DATA_DIR": str(folder / "data")}
    res = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    print(f"exit {res.returncode}: {' '.join(cmd)}")
    if res.returncode != 0:
        print(res.stderr[-2000:])
        return res.returncode
    out = json.loads(res.stdout)
    print("nodes started:", sorted(out["acquisition"]["startup_s"]["nodes"]), "exit codes:", out["acquisition"]["exit_codes"])
    for name, p in out["distill"]["pairs"].items():
        k = out["keys"]["pairs"][name]
        print(f"{name}: delivered {p['delivered_bits']} bits, QBER X key {p['error_rate']['X_key']:.4f}, "
              f"dropped slots {p['dropped_slots']}, provenance {k['provenance']['blocks']}")
    print("training:", out["train"]["rounds_run"], "round(s), test accuracy", out["train"]["final_test_accuracy"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
