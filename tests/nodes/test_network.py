"""Every party in its own OS process (issue 16): optics, detector and client nodes on loopback.

One network of 4 client processes + detector + optics runs one acquisition → distillation
(module fixture); the tests check identical keys at both ends of every pair (each node's own
store, opened read-only after the nodes exited), isolation (no other client's key-slot choices
or key bits in any node's folder, log or in any message that crossed the wire, but for the one named
exception: each client's modulator link to the optics node, the simulated optical layer), refusal of a
node with another CA's certificate. A second, one-pair network has its Cj killed (SIGKILL) right
after the second block's ``ec/start``: no key of that block at either end, the first intact.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labqfl.config import StationConfig, load_station_config, station_to_toml_dict
from labqfl.errors import LabqflError
from labqfl.net import NodeChannel, NodeCredentials, make_node_certs
from labqfl.nodes.client import split_chunks
from labqfl.nodes.common import CTL, EXIT_AFTER_ENV, WIRE_LOG_ENV, read_wire
from labqfl.nodes.launch import LocalNetwork
from labqfl.planning import station_toml
from labqfl.qkd.messaging import Message, MessageError
from labqfl.qkd.pipeline import DistillSettings
from labqfl.qkd.sifting import key_flags

CLIENTS = ["C1", "C2", "C3", "C4"]


def _station(path: Path, n_clients: int) -> Path:
    """The default station on a short loop (every pair gets key from ~20 k sifted bits), with
    ``n_clients`` clients; 50 ms tag blocks (fewer round trips)."""
    d = station_to_toml_dict(load_station_config())
    d["clients"] = d["clients"][:n_clients]
    d["loop"]["segments_km"] = [0.2] * (n_clients + 1)
    for c in d["clients"]:
        c.update(insertion_loss_db=0.2, intensities=[0.03, 0.1, 0.0], intensity_probs=[0.6, 0.2, 0.2],
                 basis_x_prob=0.7)
    d["simulation"]["block_duration_s"] = 0.05
    cfg = StationConfig.model_validate(d)
    path.write_text(station_toml(cfg))
    return path


def _blocks(store: Path, pair: str) -> dict[str, tuple[str, bytes, int]]:
    """block ID → (pool, material, nbits) of one node's store, opened read-only."""
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT b.block_id, s.purpose, b.material, b.nbits, b.meta FROM blocks b "
                           "JOIN segments s ON s.block_seq = b.seq WHERE b.pair = ?", (pair,)).fetchall()
    finally:
        con.close()
    return {r[0]: (r[1], bytes(r[2]), int(r[3])) for r in rows}


def _meta(store: Path, block_id: str) -> dict[str, Any]:
    import json

    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        (m,) = con.execute("SELECT meta FROM blocks WHERE block_id = ?", (block_id,)).fetchone()
    finally:
        con.close()
    return dict(json.loads(m))


def _key_blocks(store: Path, pair: str) -> dict[str, bytes]:
    return {b: mat for b, (pool, mat, _) in _blocks(store, pair).items() if pool == "general"}


def test_the_optics_asking_only_for_candidate_slots_gives_the_tags_of_full_drive_patterns():
    """The refactored kernel's two passes (candidates, then the clients' codes there only) are
    the same Monte-Carlo as the drive patterns over every slot: identical tags."""
    from labqfl.sim_backends.testbed import SagnacTestbed

    cfg = load_station_config()
    for c in cfg.clients:
        c.randomness = "seeded"
    cfg.simulation.qrng_epoch_base = 0
    out = []
    for on_demand in (False, True):
        tb = SagnacTestbed(cfg, threads=2)
        tb.modulation_on_demand = on_demand
        asked: dict[str, int] = {}
        logs = {c: tb.client_log(c, 0) for c in cfg.client_names}

        class Counting:
            def __init__(self, log: Any, asked: dict[str, int] = asked) -> None:
                self.log, self.asked = log, asked

            def choices(self, slots: np.ndarray) -> Any:
                self.asked[self.log.client] = self.asked.get(self.log.client, 0) + int(slots.size)
                return self.log.choices(slots)

            def fill_codes(self, s0: int, o: np.ndarray) -> None:
                self.asked[self.log.client] = self.asked.get(self.log.client, 0) + int(o.size)
                self.log.fill_codes(s0, o)

        blocks = list(tb.stream_with({c: Counting(lg) for c, lg in logs.items()}, 0.02))
        out.append((np.concatenate([b.timestamps for b in blocks]), np.concatenate([b.channels for b in blocks]),
                    asked))
    (t0, c0, full), (t1, c1, cand) = out
    assert t0.size > 1000 and np.array_equal(t0, t1) and np.array_equal(c0, c1)
    for c in cfg.client_names:  # asked only for the candidates: ~p_max of the slots it drives (0.27 here)
        assert 0 < cand[c] < 0.4 * full[c], (c, cand[c], full[c])


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("nodes4")
    station = _station(tmp / "station.toml", 4)
    wire = tmp / "wire"
    wire.mkdir()
    nodes = ["optics", "detector", *CLIENTS]
    net = LocalNetwork(tmp / "net", station, settings=DistillSettings(min_final_block_bits=2000),
                       env={n: {WIRE_LOG_ENV: str(wire)} for n in nodes})
    old = os.environ.get(WIRE_LOG_ENV)
    os.environ[WIRE_LOG_ENV] = str(wire)  # the operator's own control sessions too
    try:
        net.start()
        res = net.acquire(0.2, timeout=300)
        # (d) while the nodes run: a node from our CA is served, one from another CA refused
        ctl = NodeCredentials.load(net.certs, CTL)
        with NodeChannel(net.nodes["C1"].address, ctl, "C1", "ctl") as ch:
            pong = ch.request(Message("ctl/ping", {}))
        make_node_certs(tmp / "other-ca", ["detector", CTL])
        foreign: dict[str, str] = {}
        for target, service in (("C1", "ann"), ("optics", "optics/tags"), ("C2", "ctl")):
            who = "detector" if service != "ctl" else CTL
            try:
                NodeChannel(net.nodes[target].address, NodeCredentials.load(tmp / "other-ca", who), target, service,
                            fields={"acq": res["acquisition"]}).close()
                foreign[target] = "accepted"
            except MessageError as e:
                foreign[target] = str(e)
    finally:
        codes = net.stop()
        if old is None:
            os.environ.pop(WIRE_LOG_ENV, None)
        else:
            os.environ[WIRE_LOG_ENV] = old
    return {"net": net, "res": res, "codes": codes, "wire": wire, "pong": pong, "foreign": foreign, "tmp": tmp}


@pytest.mark.slow
def test_four_client_processes_hold_identical_keys_at_both_ends_of_every_pair(four):
    net, res = four["net"], four["res"]
    assert four["codes"] == dict.fromkeys(["optics", "detector", *CLIENTS], 0)  # clean exits on SIGTERM
    assert len(res["pairs"]) == 6
    for pair, r in res["pairs"].items():
        assert r["done"] and not r["failed"], (pair, r["failed"])
        ci, cj = pair.split("-")
        ki = _key_blocks(net.nodes[ci].data / "keystore" / f"{ci}.sqlite", pair)
        kj = _key_blocks(net.nodes[cj].data / "keystore" / f"{cj}.sqlite", pair)
        assert ki and set(ki) == set(kj) == set(r["accepted_blocks"]), pair
        for bid in ki:
            assert ki[bid] == kj[bid], f"{pair} block {bid}: keys differ"
            for node in (ci, cj):
                prov = _meta(net.nodes[node].data / "keystore" / f"{node}.sqlite", bid)["provenance"]
                assert prov["physical_layer"] == "simulated" and prov["randomness"] == "csprng"
                assert not prov["information_theoretic"] and 0 < prov["eps_total"] < 1e-6
        assert r["final_key_bits"] > 1000
    # every client answered its modulator link only for the candidate slots (cost ∝ detections)
    n_slots = res["detector"]["slots"]
    for c, info in res["clients"].items():
        assert 0 < info["answered_slots"] < 0.2 * n_slots, (c, info)


def _modulator_link_needles(msgs: list[Any], log: Any, n_windows: int = 8, width: int = 48) -> list[bytes]:
    """Byte strings that WOULD match a client's choices where the optics asks for them: the drive codes k·4 + a
    (uint8, the form of ``mod/applied``) of ``width`` consecutive asked slots, in ``n_windows`` of the client's
    ``mod/query`` questions spread over the acquisition, computed from the client's private log."""
    from labqfl.contracts.types import drive_codes
    from labqfl.nodes.optics import query_slots

    queries = [m for m in msgs if m.kind == "mod/query"]
    picked = [queries[i] for i in np.linspace(0, len(queries) - 1, min(n_windows, len(queries))).astype(int)]
    out = []
    for q in picked:
        slots = query_slots(q)
        if slots.size >= width:
            mid = slots.size // 2
            out.append(drive_codes(log, slots[mid:mid + width]).astype(np.uint8).tobytes())
    return out


def _choice_leaks(needles: dict[str, list[bytes]], msgs: dict[str, list[Any]]) -> list[str]:
    """Where a client's choices (``needles[c]``) appear on the wire but on its own modulator link: every message
    of every wire log except the ``mod/applied`` that client ``c`` itself sent the optics (``<c>.wire``), the one
    exception — the optics node is the simulated optical layer, which must know each pulse's modulation to
    simulate it (the simulator sees every photon: docs/decisions/0004, docs/nodes.md's node table)."""
    from labqfl.qkd.messaging import encode_message

    found = []
    for c, ns in needles.items():
        for wire_name, ms in msgs.items():
            for i, m in enumerate(ms):
                if wire_name == f"{c}.wire" and m.kind == "mod/applied":
                    continue
                raw = encode_message(m)
                if any(n in raw for n in ns):
                    found.append(f"{c}'s choices in {wire_name} message {i} ({m.kind})")
    return found


@pytest.mark.slow
def test_no_node_folder_log_or_wire_message_holds_another_clients_key_slot_choices_or_key_bits(four):
    """Isolation (issue 16), with its one exception named: the client→optics modulator link carries the client's
    drive codes at every slot the optics' Monte-Carlo asks about (every clicked slot among them, so every raw key
    bit: review s35 F2). Those codes are searched for, found there (positive control) and nowhere else: no other
    message of any wire log, no node's folder or log (the optics' included: it keeps none)."""
    from labqfl.sim_backends.qrng import load_private_log

    net, res, wire = four["net"], four["res"], four["wire"]
    acq = res["acquisition"]
    logs = {c: load_private_log(net.nodes[c].data, c, acq) for c in CLIENTS}
    for c in CLIENTS:  # each client's generator key is its own, 0600 in its own folder
        (f,) = (net.nodes[c].data / "nodes" / c / "choices").iterdir()
        assert f.stat().st_mode & 0o777 == 0o600
    msgs = {p.name: read_wire(p) for p in wire.glob("*.wire")}
    assert {"C1.wire", "detector.wire", "optics.wire"} <= set(msgs) or {"C1.wire", "detector.wire"} <= set(msgs)
    wire_blob = b"".join(p.read_bytes() for p in wire.glob("*.wire"))
    folders = {n: p.data for n, p in net.nodes.items()}
    node_logs = {n: p.log_path.read_bytes() for n, p in net.nodes.items()}

    def files_of(node: str) -> bytes:
        return b"".join(p.read_bytes() for p in folders[node].rglob("*") if p.is_file())

    blobs = {n: files_of(n) + node_logs[n] for n in folders}
    # the modulator link: each client's codes at the asked slots, found in what it sent the optics, nowhere else
    link = {c: _modulator_link_needles(msgs[f"{c}.wire"], logs[c]) for c in CLIENTS}
    for c, ns in link.items():
        assert len(ns) >= 4, c
        sent = b"".join(m.fields["codes"].tobytes() for m in msgs[f"{c}.wire"] if m.kind == "mod/applied")
        assert all(n in sent for n in ns), f"positive control: {c}'s codes not found on its modulator link"
        for other, blob in blobs.items():
            assert other == c or not any(n in blob for n in ns), f"{c}'s choices found in {other}'s folder or log"
    assert _choice_leaks(link, msgs) == []
    # mutation: the same codes in any other message (here a pair-link message of C2's) are caught
    planted = {**msgs, "C2.wire": [*msgs["C2.wire"], Message("pair/x", {"codes": np.frombuffer(link["C1"][0], np.uint8)})]}
    assert _choice_leaks(link, planted) == [f"C1's choices in C2.wire message {len(msgs['C2.wire'])} (pair/x)"]
    checked = 0
    for pair in res["pairs"]:
        ci, cj = pair.split("-")
        # the pair's announced slots, as the detector sent them
        slots = np.concatenate([c.ann.slots for m in msgs["detector.wire"] if m.kind == "ann/chunks"
                                for c in split_chunks(m) if c.pair == pair] or [np.zeros(0, np.int64)])
        slots = np.unique(slots)
        ri, rj = logs[ci].choices(slots), logs[cj].choices(slots)
        key = key_flags(ri) & key_flags(rj)
        assert key.sum() > 2000
        for c, rec in ((ci, ri), (cj, rj)):
            bits = (rec.phase_idx[key] >> 1).astype(np.uint8)
            needles = {"key-slot phase indices": rec.phase_idx[key][:64].tobytes(),
                       "raw key bits (packed, little)": np.packbits(bits, bitorder="little")[:24].tobytes(),
                       "raw key bits (packed, big)": np.packbits(bits)[:24].tobytes(),
                       "raw key bits (one byte each)": bits[:64].tobytes(),
                       "generator key": logs[c].key, "generator key (hex)": logs[c].key.hex().encode()}
            assert needles["generator key (hex)"] in blobs[c]  # positive control: found where it is
            for other, blob in blobs.items():
                if other == c:
                    continue
                for what, needle in needles.items():
                    assert needle not in blob, f"{c}'s {what} found in node {other}'s folder or log"
            for what, needle in needles.items():
                assert needle not in wire_blob, f"{c}'s {what} crossed the wire"
        # the final key: only in the two ends' stores
        fin = _key_blocks(folders[ci] / "keystore" / f"{ci}.sqlite", pair)
        for mat in fin.values():
            assert mat[:16] in blobs[ci] and mat[:16] in blobs[cj]  # positive control: the search finds it
            for other, blob in blobs.items():
                if other not in (ci, cj):
                    assert mat[:16] not in blob, f"key of {pair} found at {other}"
            assert mat[:16] not in wire_blob
            checked += 1
    assert checked >= 6


@pytest.mark.slow
def test_a_node_presenting_another_cas_certificate_is_refused(four):
    assert four["pong"].kind == "ctl/pong" and four["pong"].get("name") == "C1"  # positive control
    for target, outcome in four["foreign"].items():
        assert outcome != "accepted", target
        assert "unreachable or refused the TLS handshake" in outcome or "UNAVAILABLE" in outcome, outcome


@pytest.mark.slow
def test_a_cj_node_killed_in_mid_block_leaves_no_key_of_that_block_and_earlier_blocks_intact(tmp_path):
    station = _station(tmp_path / "station.toml", 2)
    net = LocalNetwork(tmp_path / "net", station,
                       settings=DistillSettings(block_bits=20_000, min_final_block_bits=2000),
                       env={"C2": {EXIT_AFTER_ENV: "ec/start:2"}})
    try:
        net.start()
        with pytest.raises(LabqflError):
            net.acquire(0.12, timeout=300)
    finally:
        codes = net.stop()
    assert codes["C2"] == -9  # killed by the hook, not shut down
    assert codes["C1"] == 0 and codes["optics"] == 0 and codes["detector"] == 0
    pair = "C1-C2"
    s1, s2 = net.nodes["C1"].data / "keystore" / "C1.sqlite", net.nodes["C2"].data / "keystore" / "C2.sqlite"
    k1, k2 = _key_blocks(s1, pair), _key_blocks(s2, pair)
    assert len(k1) == 1 and k1 == k2  # the first block, identical at both ends; nothing of the second
    (first,) = k1
    con = sqlite3.connect(f"file:{s1}?mode=ro", uri=True)
    try:
        claimed = con.execute('SELECT start, "end", block_id FROM distilled_slots WHERE pair = ? ORDER BY start',
                              (pair,)).fetchall()
    finally:
        con.close()
    # the killed block's slots are claimed (spent): its raw data is never distilled again
    assert len(claimed) == 2 and claimed[0][2] == first and claimed[1][2] != first
    assert not list((net.nodes["C2"].data / "nodes" / "C2" / "pending").iterdir())


def test_both_ends_cut_the_detectors_chunks_at_the_pairs_fixed_block_ends():
    from labqfl.contracts.schedule import PairSchedule
    from labqfl.nodes.client import block_cuts

    cfg = load_station_config()
    sch = PairSchedule.from_config(cfg)
    pair, n = sch.names[2], 300_000
    ends = [sch.slot_end(pair, m * n) for m in range(1, 40)]
    rng = np.random.default_rng(1)
    bounds = np.unique(np.concatenate([[0], rng.integers(1, ends[-1], 60), ends[:5]]))
    got: list[int] = []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        cuts = block_cuts(sch, pair, n, lo, hi)
        assert all(lo < c < hi for c in cuts)
        got += cuts + ([hi] if hi in ends else [])
    assert got == [e for e in ends if e <= bounds[-1]]  # every block end once, nothing else


def test_per_pair_block_sizes_reach_the_client_nodes_settings():
    from labqfl.cli.node import _settings
    from labqfl.errors import ConfigError

    s, plan = _settings(None, 20_000, "cascade", 2000, None, 1e-9, ["C1-C2=400000"], ["C1-C2=5000"])
    assert plan is None and s.min_final_block_bits == 2000 and s.block_bits == 20_000
    assert s.pair_block_slots == {"C1-C2": 400_000} and s.pair_min_final_block_bits == {"C1-C2": 5000}
    assert s.params.eps_sec == 1e-9
    with pytest.raises(ConfigError, match="PAIR=INTEGER"):
        _settings(None, 20_000, "cascade", 2000, None, 1e-9, ["C1-C2:400000"])


def test_a_pending_block_is_stored_at_cj_only_if_ci_holds_it(tmp_path):
    """Cj keeps an accepted block in a pending file until Ci says it stored it: at the next
    session the blocks Ci holds are stored (same IDs), the others discarded and their file gone."""
    from labqfl.nodes.client import ClientNode

    make_node_certs(tmp_path / "certs", ["C2"])
    node = ClientNode("C2", station=None, data_dir=tmp_path / "C2", listen="127.0.0.1:0", certs=tmp_path / "certs")
    try:
        rng = np.random.default_rng(5)
        keys = {b: rng.integers(0, 2, 3000, dtype=np.uint8) for b in ("blk-held", "blk-lost")}
        for b, k in keys.items():
            node.write_pending("C1-C2", b, k, 192, {"kind": "test"})
        files = list(node.pending.iterdir())
        assert len(files) == 2 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
        assert sorted(node.pending_ids("C1-C2")) == ["blk-held", "blk-lost"] and node.pending_ids("C2-C3") == []
        node.resolve_pending("C1-C2", ["blk-held", "blk-held-auth"])
        assert not list(node.pending.iterdir())
        assert node.store.has_block("blk-held") and node.store.has_block("blk-held-auth")
        assert not node.store.has_block("blk-lost") and not node.store.has_block("blk-lost-auth")
        assert node.store.available_bits("C1-C2", "general") == 3000 - 192
    finally:
        node.store.close()


@pytest.mark.slow
def test_sigterm_in_mid_block_finishes_that_block_at_both_ends_and_stops_cleanly(tmp_path):
    """Ci gets SIGTERM right after its first ``ec/start`` was answered: it completes that block
    (stored at both ends, identical), takes no new one and exits 0."""
    station = _station(tmp_path / "station.toml", 2)
    net = LocalNetwork(tmp_path / "net", station,
                       settings=DistillSettings(block_bits=20_000, min_final_block_bits=2000),
                       env={"C1": {EXIT_AFTER_ENV: "ec/start:1:TERM"}})
    try:
        net.start()
        try:
            net.acquire(0.12, timeout=300)
        except LabqflError:
            pass  # C1 left in the middle of the acquisition; the operator is told, nothing else
    finally:
        codes = net.stop()
    assert codes["C1"] == 0  # a clean exit
    pair = "C1-C2"
    k1 = _key_blocks(net.nodes["C1"].data / "keystore" / "C1.sqlite", pair)
    k2 = _key_blocks(net.nodes["C2"].data / "keystore" / "C2.sqlite", pair)
    assert len(k1) == 1 and k1 == k2
    assert not list((net.nodes["C2"].data / "nodes" / "C2" / "pending").iterdir())


@pytest.mark.slow
def test_sigterm_ends_the_detectors_acquisition_while_its_optics_does_not_answer(tmp_path):
    """The detector waits on a ``tags/next`` that the optics does not answer (SIGSTOP: a hung or overloaded
    optics node) when it gets SIGTERM. It must end its acquisition and exit 0 within seconds, not when the
    optics answers: before, it held its process until the launcher's SIGKILL 60 s later (seen in CI under
    load, where the optics then had no time left either and was killed too)."""
    station = _station(tmp_path / "station.toml", 2)
    wire = tmp_path / "wire"
    wire.mkdir()
    net = LocalNetwork(tmp_path / "net", station, settings=DistillSettings(min_final_block_bits=2000),
                       env={"detector": {WIRE_LOG_ENV: str(wire)}})
    errors: list[LabqflError] = []

    def acquire() -> None:
        try:
            net.acquire(600.0, timeout=900)
        except LabqflError as e:
            errors.append(e)

    optics = None
    acq = threading.Thread(target=acquire, daemon=True)
    try:
        net.start()
        acq.start()
        deadline, rec = time.monotonic() + 120, wire / "detector.wire"
        while not (rec.is_file() and rec.read_bytes().count(b"tags/block") >= 3):
            assert time.monotonic() < deadline, "the detector never received tag blocks from the optics"
            time.sleep(0.2)
        optics = net.nodes["optics"].proc
        os.kill(optics.pid, signal.SIGSTOP)
        time.sleep(1.0)  # the detector's next tags/next now waits on the stopped optics
        det = net.nodes["detector"].proc
        t0 = time.monotonic()
        det.send_signal(signal.SIGTERM)
        assert det.wait(30) == 0  # TimeoutExpired before: the acquisition thread kept the process alive
        assert time.monotonic() - t0 < 30
    finally:
        if optics is not None:
            os.kill(optics.pid, signal.SIGCONT)
        codes = net.stop()
    acq.join(120)
    assert not acq.is_alive()
    assert errors, "the acquisition was cut short: the launcher must be told"
    assert codes == dict.fromkeys(["optics", "detector", "C1", "C2"], 0), codes


def test_the_optics_gets_its_own_grace_after_a_first_group_node_had_to_be_killed(tmp_path):
    """``LocalNetwork.stop``: a detector that ignores SIGTERM is killed after the timeout; the optics,
    stopped after it, still gets its own time to exit cleanly. Before, one deadline covered both groups,
    and an optics needing 0.5 s after the detector's kill was killed too (exit −9)."""
    import subprocess
    import sys

    from labqfl.nodes.launch import NodeProcess

    ignores = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    slow_clean = ("import signal, sys, time\n"
                  "def stop(*_): time.sleep(0.5); sys.exit(0)\n"
                  "signal.signal(signal.SIGTERM, stop); print('up', flush=True); time.sleep(60)")
    net = LocalNetwork(tmp_path / "net", None)
    for name, role, code in (("detector", "detector", ignores), ("optics", "optics", slow_clean)):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"  # its handler is installed
        net.nodes[name] = NodeProcess(name, role, tmp_path, proc)
    t0 = time.monotonic()
    codes = net.stop(timeout=2.0)
    assert codes == {"detector": -9, "optics": 0}, codes
    assert time.monotonic() - t0 < 10
