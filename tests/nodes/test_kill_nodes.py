"""kill -TERM of ``labqfl run`` on its default path (every party a node process) in mid-acquisition.

C1 of a two-client station streams its frames to an emulated Pulse Streamer served from this test process
(so its state outlives the killed processes); the stores already hold a key block of an earlier run. After
SIGTERM to ``labqfl run`` alone: its nodes are stopped by it (C1's node stops its stream and puts its
generator in its safe state: no stream, outputs at 0 V), every node process has ended, the acquisition is
recorded as incomplete, no block of it is stored at either end (nor pending at Cj), and the earlier block is
intact at both ends. The other instruments of this station are simulated inside the optics node, which
ends with the others.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labqfl.keystore import KeyStore
from labqfl.serialize import dump_toml

LABQFL = Path(sys.executable).with_name("labqfl")
PAIR = "C1-C2"
EARLIER = "earlier-run-block"


def _general_blocks(store: KeyStore) -> list[str]:
    return [b["block_id"] for b in store.blocks(PAIR) if b["meta"].get("kind") not in ("preshared-auth", "auth-refill")
            and not b["block_id"].startswith("preshared")]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the node processes through /proc")
def test_sigterm_of_labqfl_run_over_nodes_leaves_generator_dark_no_process_and_no_partial_block(kill: Any,
        small_station_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("pulsestreamer")
    from labqfl.sim_backends.pulse_streamer import PulseStreamerEmulator

    data, runs = tmp_path / "data", tmp_path / "runs"
    earlier = np.random.default_rng(7).integers(0, 2, 4096, dtype=np.uint8)  # test data, not key material
    for c in ("C1", "C2"):
        with KeyStore.for_node(c, data) as st:
            st.add_block(PAIR, earlier, block_id=EARLIER, purpose="general", meta={"kind": "earlier-run"})
    pg_em = PulseStreamerEmulator()
    try:
        d = kill.stream_c1(tomllib.loads(small_station_file.read_text(encoding="utf-8")), pg_em.ip)
        station_file = tmp_path / "streaming_c1.toml"
        station_file.write_text(dump_toml(d), encoding="utf-8")
        nodes: dict[int, str] = {}

        def acquiring() -> bool:  # recorded as started, every node up, C1's generator playing its frames
            for p in runs.glob("*/state.json"):
                try:
                    started = bool(json.loads(p.read_text(encoding="utf-8")).get("acquisitions"))
                except ValueError:  # being written
                    return False
                nodes.update(kill.node_children(proc.pid))
                return started and len(nodes) == 4 and pg_em.playing is not None
            return False

        with kill.running([str(LABQFL), "run", "--duration", "30000", "--rounds", "1", "--config", str(station_file),
                           "--out", str(runs), "--data-dir", str(data)]) as proc:
            kill.wait_for(acquiring, "labqfl run acquiring over its nodes with C1's frames playing", proc, timeout=300)
            assert sorted(nodes.values()) == ["C1", "C2", "detector", "optics"]
            err = kill.terminate(proc, timeout=120)
        assert proc.returncode != 0, err[-kill.TAIL:]  # interrupted, not complete
        kill.assert_dark(pg_em)  # C1's node stopped its stream and left its generator dark
    finally:
        pg_em.close()
    alive = [n for pid, n in nodes.items() if Path(f"/proc/{pid}").exists()]
    assert not alive, f"node processes still running after the kill: {alive}"
    run_log = next(runs.glob("*/run.log")).read_text(encoding="utf-8")
    assert "exit codes" not in run_log, run_log[-kill.TAIL:]  # every node ended by itself with 0 (none killed)
    state = json.loads(next(runs.glob("*/state.json")).read_text(encoding="utf-8"))
    assert [a["complete"] for a in state["acquisitions"]] == [False]
    assert not list((data / "nodes" / "C2" / "pending").glob("*.json"))  # no block half-stored at Cj
    with KeyStore.for_node("C1", data) as s1, KeyStore.for_node("C2", data) as s2:
        assert _general_blocks(s1) == _general_blocks(s2) == [EARLIER]
        assert s1.available_bits(PAIR, "general") == s2.available_bits(PAIR, "general") == earlier.size
        k1 = s1.take(PAIR, earlier.size, "general")
        assert np.array_equal(k1.bits, earlier)
        assert np.array_equal(s2.take_exact(PAIR, k1.refs, "general").bits, earlier)
