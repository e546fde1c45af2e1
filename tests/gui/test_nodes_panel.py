"""The Nodes panel (issue 16, item 6): the window operates a set of node processes.

It starts a local set (optics, detector, 2 clients as OS processes), acquires across it with the
Qt thread free, shows a key on every pair with what its security rests on, and on close every
node process has exited 0 and no thread of the panel is left. It connects to a set started
outside the window (addresses file + the operator's certificates) and leaves it running when
the window closes. A certificate folder of another CA gives one clear error line in the panel.
Bad node options of ``labqfl gui`` give one error line before any window opens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labqfl.gui.controller import Controller
from labqfl.gui.main_window import MainWindow
from PySide6.QtCore import Qt, QTimer
from typer.testing import CliRunner

from labqfl.app.nodes import NodeSet, read_addresses
from labqfl.cli import app
from labqfl.config import StationConfig, load_station_config, station_to_toml_dict
from labqfl.errors import ConfigError
from labqfl.net import make_node_certs
from labqfl.nodes.launch import LocalNetwork
from labqfl.planning import station_toml

#: simulated seconds per acquisition: ~100 k sifted bits per pair on the station below, enough for key
DURATION_S = 0.2


def _station(path: Path) -> Path:
    """Two clients on a short loop with balanced choices (as tests/nodes): 0.2 s gives key."""
    d = station_to_toml_dict(load_station_config())
    d["name"] = "gui-nodes-2client"
    d["clients"] = d["clients"][:2]
    d["loop"]["segments_km"] = [0.2] * 3
    for c in d["clients"]:
        c.update(insertion_loss_db=0.2, intensities=[0.03, 0.1, 0.0], intensity_probs=[0.6, 0.2, 0.2],
                 basis_x_prob=0.7)
    d["simulation"]["block_duration_s"] = 0.05
    path.write_text(station_toml(StationConfig.model_validate(d)))
    return path


def _window(qtbot, station: Path, tmp: Path) -> MainWindow:  # type: ignore[no-untyped-def]
    ctl = Controller(load_station_config(station), data_dir=tmp / "data", runs_dir=tmp / "runs")
    w = MainWindow(ctl)
    qtbot.addWidget(w)
    w.show()
    w.show_tab("nodes")
    return w


def _close(qtbot, w: MainWindow) -> None:  # type: ignore[no-untyped-def]
    """Close the window as a user does and wait until it has (jobs and nodes stopped)."""
    w.close()
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=90_000)


def _acquire(qtbot, w: MainWindow, assert_loop_responsive) -> None:  # type: ignore[no-untyped-def]
    """Run one acquisition from the panel; the Qt thread keeps serving a 10 ms probe meanwhile."""
    p = w.nodes_panel
    p.duration.setValue(DURATION_S)
    ticks: list[float] = []
    probe = QTimer()
    probe.timeout.connect(lambda: ticks.append(time.monotonic()))
    probe.start(10)
    t0 = time.monotonic()
    qtbot.mouseClick(p.acquire_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: p.pair_rows().get("C1-C2", {}).get("Status") == "acquiring…" or p.results is not None,
                    timeout=10_000)  # progress shown per pair while the nodes work
    qtbot.waitUntil(lambda: p.results is not None or bool(p.errors), timeout=300_000)  # bound, not a sleep
    probe.stop()
    assert not p.errors, p.errors
    assert_loop_responsive(ticks, time.monotonic() - t0)


def _assert_key_on_every_pair(w: MainWindow, source: str) -> None:
    p = w.nodes_panel
    assert p.results is not None and list(p.results.pairs) == ["C1-C2"]
    for pair, o in p.results.pairs.items():
        assert o.status == "key" and o.final_key_bits > 1000 and o.sifted_bits > o.final_key_bits, (pair, o)
        assert o.qber is not None and 0 < o.qber < 0.05 and o.key_rate_bps == pytest.approx(o.final_key_bits / DURATION_S)
        assert o.provenance_source == source and o.provenance == "simulated/csprng" and not o.information_theoretic
        row = p.pair_rows()[pair]
        assert row["Status"] == "key" and row["Final key"] != "—" and row["QBER X (key)"].endswith("%")
        assert "no physical security" in row["Key security (block provenance)"]
    assert "no physical security" in p.security.text()


def _no_panel_threads(w: MainWindow) -> None:
    assert w.nodes_panel.live_threads(wait_s=10.0) == [] and w.ctl.live_threads(wait_s=10.0) == []
    assert not [t.name for t in threading.enumerate() if t.name.startswith("labqfl-nodes")]


@pytest.mark.slow
def test_panel_starts_a_local_set_shows_a_key_on_every_pair_and_stops_every_process_on_close(
        qtbot, tmp_path, assert_loop_responsive) -> None:  # type: ignore[no-untyped-def]
    station = _station(tmp_path / "station.toml")
    w = _window(qtbot, station, tmp_path)
    p = w.nodes_panel
    assert w.tabs.tabText(w.tabs.currentIndex()) == "Nodes" and not p.acquire_btn.isEnabled()
    p.set_local(station)
    qtbot.mouseClick(p.open_btn, Qt.MouseButton.LeftButton)
    # start includes the Numba warm-up of LocalNetwork (a cold cache compiles for a minute on a busy machine)
    qtbot.waitUntil(lambda: p.runner.nodes is not None or bool(p.errors), timeout=300_000)
    assert not p.errors, p.errors
    qtbot.waitUntil(lambda: p.acquire_btn.isEnabled(), timeout=10_000)
    rows = p.node_rows()
    assert {n: (r["Role"], r["State"]) for n, r in rows.items()} == {
        "optics": ("optics", "answering"), "detector": ("detector", "answering"),
        "C1": ("client", "answering"), "C2": ("client", "answering")}
    assert all(r["Address"].startswith("127.0.0.1:") for r in rows.values())
    ns = p.runner.nodes
    assert ns is not None and ns.started
    procs = {n: np_.proc for n, np_ in ns.network.nodes.items()}
    _acquire(qtbot, w, assert_loop_responsive)
    _assert_key_on_every_pair(w, "blocks")
    _close(qtbot, w)
    assert p.runner.exit_codes == {"optics": 0, "detector": 0, "C1": 0, "C2": 0}
    assert {n: pr.returncode for n, pr in procs.items()} == p.runner.exit_codes
    assert all(r["State"] == "stopped (exit code 0)" for r in p.node_rows().values())
    assert not ns.network.workdir.exists()  # throwaway certificates (the CA key too) are gone
    _no_panel_threads(w)


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A set of nodes started outside the window, its addresses file, and another CA's certificates."""
    tmp = tmp_path_factory.mktemp("outside")
    station = _station(tmp / "station.toml")
    net = LocalNetwork(tmp / "net", station)
    net.start()
    try:
        addresses = tmp / "nodes.txt"
        addresses.write_text("# started outside the GUI\n" + "".join(f"{n}={a}\n" for n, a in net.addresses().items()))
        make_node_certs(tmp / "other-ca", ["ctl"])
        yield {"station": station, "addresses": addresses, "certs": net.certs, "other": tmp / "other-ca",
               "net": net, "tmp": tmp}  # type: ignore[misc]
    finally:
        codes = net.stop()
    assert codes == {"optics": 0, "detector": 0, "C1": 0, "C2": 0}


@pytest.mark.slow
def test_panel_connects_to_nodes_started_outside_and_leaves_them_running(
        qtbot, tmp_path, outside, assert_loop_responsive) -> None:  # type: ignore[no-untyped-def]
    w = _window(qtbot, outside["station"], tmp_path)
    p = w.nodes_panel
    p.set_connect(outside["addresses"], outside["certs"])
    assert p.open_btn.text() == "▶ Connect"
    qtbot.mouseClick(p.open_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: p.acquire_btn.isEnabled() or bool(p.errors), timeout=60_000)
    assert not p.errors, p.errors
    assert {n: r["Role"] for n, r in p.node_rows().items()} == {
        "optics": "optics", "detector": "detector", "C1": "client", "C2": "client"}  # asked from the nodes
    assert p.close_btn.text() == "■ Disconnect"
    _acquire(qtbot, w, assert_loop_responsive)
    _assert_key_on_every_pair(w, "station")
    _close(qtbot, w)
    assert p.runner.exit_codes == {}
    assert all(r["State"] == "left running" for r in p.node_rows().values())
    net: LocalNetwork = outside["net"]  # type: ignore[assignment]
    assert all(np_.proc.poll() is None for np_ in net.nodes.values())
    again = NodeSet.connect(outside["addresses"], outside["certs"], station=outside["station"])
    assert {s.state for s in again.nodes()} == {"answering"} and again.close() == {}
    _no_panel_threads(w)


@pytest.mark.slow
def test_a_certificate_folder_of_another_ca_gives_one_clear_error_in_the_panel(
        qtbot, tmp_path, outside) -> None:  # type: ignore[no-untyped-def]
    w = _window(qtbot, outside["station"], tmp_path)
    p = w.nodes_panel
    p.set_connect(outside["addresses"], outside["other"])
    qtbot.mouseClick(p.open_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(p.errors), timeout=60_000)
    qtbot.waitUntil(lambda: not p.runner.busy, timeout=10_000)
    err = p.error_label.text()
    assert len(p.errors) == 1 and "\n" not in err and err == p.errors[0]
    assert err.startswith("connect: node ") and str(outside["other"]) in err and "TLS handshake" in err
    assert p.runner.nodes is None and p.open_btn.isEnabled() and not p.acquire_btn.isEnabled()
    assert w.isVisible() and w.isEnabled()  # no crash, no modal freeze
    # a folder without the operator's files at all: one line naming the missing file, no thread
    p.set_connect(outside["addresses"], tmp_path)
    qtbot.mouseClick(p.open_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(p.errors) == 2, timeout=10_000)
    assert "ca.pem" in p.errors[1] and "\n" not in p.errors[1]
    _close(qtbot, w)
    _no_panel_threads(w)


# -- input checks (no nodes, no window) ---------------------------------------------------------------
def test_read_addresses_names_the_file_and_line_of_a_bad_entry(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "nodes.txt"
    f.write_text("# lab\ndetector = detector.lab:7001\nC1=c1.lab:7002  # client 1\n")
    assert read_addresses(f) == {"detector": "detector.lab:7001", "C1": "c1.lab:7002"}
    for body, what in (("C1=c1.lab\n", ":1:"), ("x\nC1=h:99999\n", ":1:"), ("C1=h:1\nC1=h:2\n", "listed twice"),
                       ("# nothing\n", "no node addresses")):
        f.write_text(body)
        with pytest.raises(ConfigError, match=what) as e:
            read_addresses(f)
        assert str(f) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("args, says", [
    (["--nodes", "remote"], "--nodes 'remote': expected 'local'"),
    (["--connect", "{addr}"], "also give --certs"),
    (["--certs", "{tmp}"], "--certs is only meaningful with --connect"),
    (["--nodes", "local", "--connect", "{addr}", "--certs", "{tmp}"], "exclude each other"),
    (["--connect", "{bad}", "--certs", "{tmp}"], "is not NAME=HOST:PORT"),
    (["--connect", "{addr}", "--certs", "{tmp}"], "ca.pem: CA certificate"),
    (["--nodes", "local", "--duration", "0"], "--duration must be a number of seconds in (0, 1e+06], got 0.0"),
])
def test_bad_node_options_of_labqfl_gui_give_one_error_line(tmp_path, args, says) -> None:  # type: ignore[no-untyped-def]
    addr, bad = tmp_path / "nodes.txt", tmp_path / "bad.txt"
    addr.write_text("detector=127.0.0.1:7001\n")
    bad.write_text("detector 127.0.0.1:7001\n")
    argv = ["gui", *(a.format(addr=addr, bad=bad, tmp=tmp_path) for a in args)]
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr
