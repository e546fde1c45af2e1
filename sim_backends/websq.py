"""Protocol-level emulator of a Single Quantum SNSPD controller's WebSQ TCP interface, on loopback.

It speaks the wire protocol of Single Quantum's own ``WebSQControl.py`` (MIT, © 2020 Single
Quantum B. V.; the command set :class:`labqfl.drivers.singlequantum_eos.SingleQuantumEos` uses):

* **control port** — the client sends JSON objects (no delimiter); the controller sends JSON objects
  each ended by ``\\x17`` (ETB). ``{"request": "labelProps", "value": "None"}`` is answered by one
  ``{"label": L, "value": {"value": v, …}}`` per label; a command
  ``{"command": C, "label": L, "value": v}`` sets ``L`` and is echoed to every client as the broadcast
  ``{"label": L, "value": v}``; a refused value sends ``{"label": "Error", "value": "<text>"}``
  (the vendor client routes every label containing "Error" to its error callback);
  ``{"request": "TemperatureHistory"}`` is answered with the label ``temperature_long_memory``;
* **counts port** — one text line ``<time>,<counts ch1>,…,<counts chN>\\n`` per measurement period
  to every connected client.

The emulator keeps the state a test reads back (:attr:`bias_ua`, :attr:`enabled`,
:attr:`bias_history` — every bias vector the controller accepted, so a ramp is visible step by step)
in the process that runs it, so a test can kill the client process and then read what the
controller was left with.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

#: Bias current range the vendor's client documents for its IV scans (µA).
BIAS_LIMIT_UA = 90.9
#: Shortest measurement period the vendor's client documents (ms).
MIN_PERIOD_MS = 10
ETB = "\x17"


class WebSQEmulator:
    """A WebSQ controller with ``n_detectors`` channels on two loopback ports (0 = pick free ports)."""

    def __init__(self, n_detectors: int = 2, *, control_port: int = 0, counts_port: int = 0,
                 rate_hz_per_ua: float = 100.0) -> None:
        self.n = int(n_detectors)
        self.lock = threading.RLock()
        self.bias_ua = [0.0] * self.n
        self.trigger_mv = [25.0] * self.n
        self.enabled = False
        self.period_ms = 100
        self.temperature_k = 2.51
        self.rate_hz_per_ua = float(rate_hz_per_ua)
        self.bias_history: list[list[float]] = []
        self.received: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self._count_clients: list[socket.socket] = []
        self._ctl = socket.create_server(("127.0.0.1", control_port))
        self._cnt = socket.create_server(("127.0.0.1", counts_port))
        self.control_port = self._ctl.getsockname()[1]
        self.counts_port = self._cnt.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, args=(self._ctl, False), daemon=True),
                         threading.Thread(target=self._accept, args=(self._cnt, True), daemon=True),
                         threading.Thread(target=self._count_loop, daemon=True)]
        for t in self._threads:
            t.start()

    # -- addresses ----------------------------------------------------------------------------------
    @property
    def resource(self) -> str:
        """VISA resource of the control port (what a station file's ``resource`` holds)."""
        return f"TCPIP0::127.0.0.1::{self.control_port}::SOCKET"

    # -- state ------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        with self.lock:
            return {"bias_ua": list(self.bias_ua), "enabled": self.enabled, "trigger_mv": list(self.trigger_mv),
                    "period_ms": self.period_ms, "bias_history": [list(b) for b in self.bias_history]}

    def _label_values(self) -> dict[str, Any]:
        return {"NumberOfDetectors": self.n, "BiasCurrent": list(self.bias_ua), "TriggerLevel": list(self.trigger_mv),
                "DetectorEnable": self.enabled, "InptMeasurementPeriod": self.period_ms}

    # -- protocol ---------------------------------------------------------------------------------
    def handle(self, msg: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Apply one client message; return (replies to that client, broadcasts to every client)."""
        with self.lock:
            self.received.append(msg)
            if msg.get("request") == "labelProps":
                return [{"label": k, "value": {"value": v}} for k, v in self._label_values().items()], []
            if msg.get("request") == "TemperatureHistory":
                return [{"label": "temperature_long_memory",
                         "value": {"T": [self.temperature_k], "T2": [40.0], "x": ["01-Jan-26 00:00:00.000"],
                                   "V_avrg": [0.0], "BoardTemp1": [30.0], "BoardTemp2": [30.0]}}], []
            command, label, value = msg.get("command"), msg.get("label"), msg.get("value")
            error = None
            if command == "SetAllBiasCurrents":
                if (not isinstance(value, list) or len(value) != self.n
                        or not all(isinstance(v, int | float) and abs(v) <= BIAS_LIMIT_UA for v in value)):
                    error = f"SetAllBiasCurrents: expected {self.n} currents within ±{BIAS_LIMIT_UA} uA, got {value!r}"
                else:
                    self.bias_ua = [float(v) for v in value]
                    self.bias_history.append(list(self.bias_ua))
            elif command == "SetAllTriggerLevels":
                if not isinstance(value, list) or len(value) != self.n:
                    error = f"SetAllTriggerLevels: expected {self.n} levels, got {value!r}"
                else:
                    self.trigger_mv = [float(v) for v in value]
            elif command == "DetectorEnable":
                if not isinstance(value, bool):
                    error = f"DetectorEnable: expected true or false, got {value!r}"
                else:
                    self.enabled = value
            elif command == "SetMeasurementPeriod":
                if not isinstance(value, int) or value < MIN_PERIOD_MS:
                    error = f"SetMeasurementPeriod: expected an integer >= {MIN_PERIOD_MS} ms, got {value!r}"
                else:
                    self.period_ms = value
            else:
                error = f"unknown message {msg!r}"
            if error:
                return [{"label": "Error", "value": error}], []
            return [], [{"label": label, "value": value}]

    # -- sockets ------------------------------------------------------------------------------------
    def _accept(self, server: socket.socket, counts: bool) -> None:
        server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            with self.lock:
                (self._count_clients if counts else self._clients).append(conn)
            if not counts:
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _send(self, conn: socket.socket, msgs: list[dict[str, Any]]) -> None:
        if msgs:
            try:
                conn.sendall("".join(json.dumps(m) + ETB for m in msgs).encode())
            except OSError:
                self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        with self.lock:
            for group in (self._clients, self._count_clients):
                if conn in group:
                    group.remove(conn)
        conn.close()

    def _serve(self, conn: socket.socket) -> None:
        decoder = json.JSONDecoder()
        buf = ""
        conn.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            buf += data.decode("utf-8", errors="replace")
            while True:
                buf = buf.lstrip()
                if not buf:
                    break
                try:
                    msg, end = decoder.raw_decode(buf)
                except json.JSONDecodeError:
                    break  # incomplete object: wait for more bytes
                buf = buf[end:]
                replies, broadcasts = self.handle(msg if isinstance(msg, dict) else {"invalid": msg})
                self._send(conn, replies)
                with self.lock:
                    clients = list(self._clients)
                for c in clients:
                    self._send(c, broadcasts)
        self._drop(conn)

    def _count_loop(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                period = self.period_ms / 1e3
                counts = [round(self.rate_hz_per_ua * b * period) if self.enabled and b > 0 else 0 for b in self.bias_ua]
                clients = list(self._count_clients)
            line = (",".join([f"{time.time():.3f}"] + [str(c) for c in counts]) + "\n").encode()
            for c in clients:
                try:
                    c.sendall(line)
                except OSError:
                    self._drop(c)
            self._stop.wait(period)

    def close(self) -> None:
        self._stop.set()
        for s in (self._ctl, self._cnt):
            s.close()
        with self.lock:
            for c in self._clients + self._count_clients:
                c.close()
            self._clients.clear()
            self._count_clients.clear()

    def __enter__(self) -> WebSQEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["BIAS_LIMIT_UA", "MIN_PERIOD_MS", "WebSQEmulator"]
