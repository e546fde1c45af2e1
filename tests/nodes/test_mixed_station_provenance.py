"""Both ends of a block record the same provenance, the weaker of the two clients' own claims (review s35 leak F7).

Each client node stamped a block's provenance from its own copy of the station file: its own randomness from
its generator, the partner's from that file. Two nodes with different station copies (C1's says both clients
use the CSPRNG, C2's, the one C2 runs on, that C2 is seeded) stored the same blocks as ``simulated/csprng`` at
C1 and ``simulated/seeded`` at C2: C1's store (its ``keys status``, an ETSI KME, training from it) called a key
whose C2 choices anyone can predict CSPRNG-backed. Now each end sends its own randomness and physical layer in
``block/open`` (Ci) / ``block/ok`` (Cj), both absorbed into the block's Wegman–Carter-tagged transcript, and
both record the weakest of the two claims.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from node_helpers import sibling

from labqfl.config import StationConfig, load_station_config, station_to_toml_dict
from labqfl.nodes.launch import LocalNetwork, NodeProcess
from labqfl.planning import station_toml
from labqfl.qkd.pipeline import DistillSettings

PAIR = "C1-C2"


def _provenances(store: Path) -> dict[str, dict[str, Any]]:
    import json

    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT block_id, meta FROM blocks WHERE pair = ?", (PAIR,)).fetchall()
    finally:
        con.close()
    return {b: json.loads(m) for b, m in rows if "provenance" in json.loads(m)}


class _MixedNetwork(LocalNetwork):
    """A local network whose C2 runs on its own copy of the station file (the others on the shared one)."""

    def __init__(self, *args: Any, c2_station: Path, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.c2_station = c2_station

    def _spawn(self, name: str, role: str, args: list[str]) -> NodeProcess:
        shared = self.station
        self.station = self.c2_station if name == "C2" else shared
        try:
            return super()._spawn(name, role, args)
        finally:
            self.station = shared


@pytest.mark.slow
def test_two_ends_with_different_station_copies_record_the_same_weaker_provenance(tmp_path: Path) -> None:
    net_mod = sibling("test_network", __file__)
    station = net_mod._station(tmp_path / "station.toml", 2)
    d = station_to_toml_dict(load_station_config(station))
    assert all(c["randomness"] == "csprng" for c in d["clients"])  # the shared copy: both CSPRNG
    d["clients"][1]["randomness"] = "seeded"  # C2's own copy: C2 is seeded
    c2_station = tmp_path / "station_c2_seeded.toml"
    c2_station.write_text(station_toml(StationConfig.model_validate(d)))
    net = _MixedNetwork(tmp_path / "net", station, c2_station=c2_station,
                        settings=DistillSettings(block_bits=20_000, min_final_block_bits=2000))
    try:
        net.start()
        net.acquire(0.12, timeout=300)
    finally:
        codes = net.stop()
    assert codes == dict.fromkeys(["optics", "detector", "C1", "C2"], 0)
    p1 = _provenances(net.nodes["C1"].data / "keystore" / "C1.sqlite")
    p2 = _provenances(net.nodes["C2"].data / "keystore" / "C2.sqlite")
    assert p1 and p1.keys() == p2.keys()  # key and refill blocks, at both ends
    for bid in p1:
        a, b = p1[bid]["provenance"], p2[bid]["provenance"]
        assert a == b, (bid, a, b)
        assert (a["physical_layer"], a["randomness"]) == ("simulated", "seeded")  # the weaker claim: C2's
        assert a["security"].startswith("not secret")
        assert p1[bid]["origins"] == p2[bid]["origins"] == {
            "C1": {"physical_layer": "simulated", "randomness": "csprng"},
            "C2": {"physical_layer": "simulated", "randomness": "seeded"}}
