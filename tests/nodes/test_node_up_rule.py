"""The node commands pick their blocks by the block-size rule when none is forced (issue 18 item 2).

Before, ``labqfl node up`` with its defaults (0.2 s, 10^6-bit blocks, 10 000-bit rest blocks)
aborted every block of every pair on the default station ("phase-error bound 0.5000 above
threshold 0.4500"), and ``labqfl node client`` and the GUI's local node set distilled fixed
10^6-bit blocks whose rest blocks aborted. Now the rule that ``labqfl run``, ``distill`` and the
GUI's in-process path use decides there too.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.cli.node import _settings
from labqfl.config import load_station_config
from labqfl.errors import ConfigError
from labqfl.nodes.launch import LocalNetwork, stream_rule_settings
from labqfl.qkd.blocksize import plan_blocks


def test_client_defaults_are_the_rule_for_an_open_ended_stream() -> None:
    cfg = load_station_config()
    plan = plan_blocks(cfg, None)
    s, got = _settings(None, None, "cascade", None, None, 1e-10)
    assert got is not None and got.duration_s is None
    assert dict(s.pair_block_slots or {}) == {n: int(pp.block_slots) for n, pp in plan.pairs.items()}
    assert dict(s.pair_min_final_block_bits or {}) == {n: pp.min_final_bits for n, pp in plan.pairs.items()}
    # every pair's rule block is well below the old fixed 10^6 sifted bits, and its rest-block floor
    # is the rule size itself (a shorter rest block is expected to abort, so it is not distilled)
    assert all(pp.min_final_bits > 10_000 for pp in plan.pairs.values())


def test_forced_block_sizes_and_rest_floor_are_kept() -> None:
    s, plan = _settings(None, 400_000, "ldpc", 20_000, None, 1e-9)
    assert plan is None
    assert (s.block_bits, s.engine, s.min_final_block_bits, s.params.eps_sec) == (400_000, "ldpc", 20_000, 1e-9)
    assert s.pair_block_slots is None and s.pair_min_final_block_bits is None
    # the rule's blocks with a smaller rest floor for every pair
    s, plan = _settings(None, None, "cascade", 5_000, None, 1e-10)
    assert plan is not None and s.pair_block_slots and s.min_final_block_bits == 5_000
    assert s.pair_min_final_block_bits is None
    # what LocalNetwork hands its clients on their command lines is taken as given
    s, plan = _settings(None, 173_558, "cascade", None, None, 1e-10, ["C1-C2=8464098"], ["C1-C2=118781"])
    assert plan is None and dict(s.pair_block_slots or {}) == {"C1-C2": 8464098}
    assert dict(s.pair_min_final_block_bits or {}) == {"C1-C2": 118781}


def test_node_up_refuses_a_duration_too_short_for_the_rule_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"--duration \(0.2 s\) is too short for the block-size rule: .*"
                                          r"needs ≥ 0.508 s .*--block-bits"):
        _settings(None, None, "cascade", None, None, 1e-10, duration=0.2, what="--duration")
    r = CliRunner().invoke(app, ["node", "up", "--duration", "0.2"])
    assert r.exit_code != 0 and "is too short for the block-size rule" in r.output


def test_a_local_network_without_settings_gives_its_clients_the_stream_rule(tmp_path) -> None:
    net = LocalNetwork(tmp_path / "net")  # constructing starts no process
    cfg = load_station_config()
    assert net.settings == stream_rule_settings(cfg)
    assert dict(net.settings.pair_block_slots or {}) == {n: int(pp.block_slots)
                                                         for n, pp in plan_blocks(cfg, None).pairs.items()}


def test_node_up_with_defaults_but_a_short_duration_gives_key_on_every_pair() -> None:
    """Six processes on loopback, 1 s of the default station: one rule-size block per pair, none aborted."""
    r = CliRunner().invoke(app, ["node", "up", "--duration", "1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["block_rule"]["n_blocks"] == 1 and out["block_rule"]["duration_s"] == 1.0
    assert set(out["pairs"]) == {"C1-C2", "C1-C3", "C1-C4", "C2-C3", "C2-C4", "C3-C4"}
    for pair, d in out["pairs"].items():
        assert d["aborted_blocks"] == 0 and d["blocks"] == 1, (pair, d["abort_reasons"])
        assert d["final_key_bits"] > 0, pair
    assert set(out["exit_codes"].values()) == {0}


def test_a_client_on_a_station_without_key_at_any_block_size_is_told_to_force_one(tmp_path) -> None:
    """300 km of loop: the model gives no pair key at any block size, so the rule has nothing to
    pick; the client refuses in one line that names --block-bits (there is no --duration to lengthen)."""
    import tomli_w

    from labqfl.config import station_to_toml_dict

    d = station_to_toml_dict(load_station_config())
    d["loop"]["segments_km"] = [60.0] * len(d["loop"]["segments_km"])
    path = tmp_path / "far.toml"
    path.write_bytes(tomli_w.dumps(d).encode())
    with pytest.raises(ConfigError, match=r"no block size gives key on this station; force a block size with "
                                          r"--block-bits$"):
        _settings(path, None, "cascade", None, None, 1e-10)
    s, plan = _settings(path, 200_000, "cascade", None, None, 1e-10)  # forced: the client starts
    assert plan is None and s.block_bits == 200_000
