"""The emulated SNSPD controller's count stream over node processes (issue 17): the detection node holds the
controller (``simulation.emulate_detectors``), the optics node the loop; during an acquisition the count stream
reports the clicks of the tag blocks the detection node slots, outside it (detectors disarmed) 0."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest


def _listen(port: int, stop: threading.Event, lines: list[tuple[float, list[int]]]) -> None:
    """Every count line of the controller's counts port until ``stop``: (wall time, counts per channel)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(0.5)
        buf = b""
        while not stop.is_set():
            try:
                data = s.recv(4096)
            except TimeoutError:
                continue
            if not data:
                return
            buf += data
            *done, buf = buf.split(b"\n")
            lines.extend((time.monotonic(), [int(x) for x in ln.decode().split(",")[1:]]) for ln in done)


@pytest.mark.slow  # ~50 s: four node processes
def test_the_detection_nodes_controller_counts_the_clicks_it_slots(tmp_path: Path, emulated_pair_station: Any) -> None:
    from labqfl.config import load_station_config
    from labqfl.nodes.launch import LocalNetwork
    from labqfl.qkd.pipeline import DistillSettings

    station = emulated_pair_station()
    cfg = load_station_config(station)
    assert cfg.simulation.emulate_detectors and [cfg.detectors[r].options["channel"] for r in ("D0", "D1")] == [1, 2]
    net = LocalNetwork(tmp_path / "net", station, settings=DistillSettings(min_final_block_bits=2000))
    lines: list[tuple[float, list[int]]] = []
    stop = threading.Event()
    try:
        net.start(warm=False)
        log = (tmp_path / "net" / "logs" / "detector.log").read_text(encoding="utf-8")
        m = re.search(r"emulated SNSPD controller \(WebSQ\) of D0, D1: control port \d+, counts port (\d+)", log)
        assert m, log[-2000:]
        listener = threading.Thread(target=_listen, args=(int(m.group(1)), stop, lines), daemon=True)
        listener.start()
        time.sleep(0.5)
        before = len(lines)
        t0 = time.monotonic()
        res = net.acquire(0.02, timeout=120)
        t1 = time.monotonic()
        time.sleep(0.5)
    finally:
        stop.set()
        codes = net.stop()
    assert codes == dict.fromkeys(codes, 0)
    assert before > 0 and all(c == [0, 0] for _, c in lines[:before])  # disarmed before the run: 0
    during = [c for t, c in lines if t0 <= t <= t1]
    busy = [c for c in during if c[0] > 0 and c[1] > 0]
    assert busy, during  # the clicks of the slotted blocks on both nanowires
    per_channel = {int(k): v for k, v in json.loads(res["detector"]["channel_counts"]).items()}
    ch0 = cfg.time_tagger.detector_channels["D0"]
    rate0 = per_channel[ch0] / 0.02  # the acquisition's mean click rate on D0 [Hz]
    period = 0.1  # the controller's default measurement period
    # the acquisition (0.02 s) is shorter than the period: once its blocks are in, the rate over all of them
    assert abs(max(c[0] for c in busy) - rate0 * period) < 0.1 * rate0 * period  # measured: 566,354 vs 565,885
    assert lines[-1][1] == [0, 0]  # disarmed after it
    print(f"count lines: {len(lines)} ({before} before, {len(during)} during the acquisition, {len(busy)} nonzero); "
          f"peak D0 {max(c[0] for c in busy)}, D1 {max(c[1] for c in busy)} per {period} s; acquisition mean D0 "
          f"{rate0 * period:.0f}, D1 {per_channel[cfg.time_tagger.detector_channels['D1']] / 0.02 * period:.0f}")
