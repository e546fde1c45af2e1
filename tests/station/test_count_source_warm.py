"""CI at cb09aed: ``labqfl run --in-process`` on the emulated station stopped on "no count line … VI_ERROR_TMO".
The emulated SNSPD controller's count loop compiled the simulator's path rule
(``SagnacTestbed.candidate_rate`` → ``_kernels._build_table``) on a read-out during the run, 3 s under load, past
the Eos driver's 2 s read timeout: :func:`~labqfl.sim_backends.websq.warm_count_source` had warmed both paths with
the path forced, so the rule that picks one never ran. Here a fresh process warms the count source, then reads
counts as the live controller does (path not forced); no Numba kernel may gain a signature on that read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys
import numba.core.registry
from labqfl.config import load_station_config
from labqfl.sim_backends.testbed import SagnacTestbed
from labqfl.sim_backends.websq import warm_count_source

def signatures():
    out = {}
    for name, mod in list(sys.modules.items()):
        if not name.startswith("labqfl."):
            continue
        for attr, obj in list(vars(mod).items()):
            if isinstance(obj, numba.core.registry.CPUDispatcher):
                out[f"{name}.{attr}"] = len(obj.signatures)
    return out

cfg = load_station_config(sys.argv[1])
cfg = cfg.model_copy(update={"simulation": cfg.simulation.model_copy(update={"emulate_pattern_generators": False})})
tb = SagnacTestbed(cfg)
warm_count_source(tb)
before = signatures()
assert tb.modulation_on_demand is None
rates = tb.detector_count_rates(0.01)  # a controller's read-out during a run: the path rule decides
after = signatures()
print(json.dumps({"new": sorted(k for k in after if after[k] != before.get(k, 0)), "rates": rates,
                  "candidate": tb.candidate_rate()}))
"""


def test_a_live_count_read_out_compiles_nothing_after_the_warm_up(tmp_path: Path) -> None:
    station = ROOT / "examples" / "station_emulated_hardware.toml"
    proc = subprocess.run([sys.executable, "-c", PROBE, str(station)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["candidate"] > 0  # laser on: the path rule ran its kernel
    assert min(out["rates"].values()) > 0  # detectors armed: a real read-out
    assert out["new"] == [], f"compiled or loaded during a live read-out, not in the warm-up: {out['new']}"
