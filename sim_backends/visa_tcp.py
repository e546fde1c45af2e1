"""Serve a pyvisa-sim device over a loopback TCP socket, so a driver in *another process* can talk to it.

pyvisa-sim keeps a device's state inside the process that opened it; a test that kills a
``labqfl`` process cannot read back what that process left its instruments in. This server runs
one device of a pyvisa-sim YAML (the same files as ``labqfl/sim_backends/visa/``) in the test's own
process and exposes it as the VISA resource ``TCPIP0::127.0.0.1::<port>::SOCKET`` (open it with
``visa_library = "@py"``, i.e. pyvisa-py). Messages are split on the client's termination (LF; a CR
before it is dropped), fed to the device with its own termination, and its replies are sent back
ending in LF. :meth:`ask` queries the device directly (state read-back); :attr:`received` lists
every command the client sent.

A PRO8000 device (its ``*IDN?``) gets the Python model of its LDC's actual current
(:class:`labqfl.sim_backends.pro8000.LDCModel`: ``:ILD:ACT?`` follows ``:ILD:SET`` and ``:LASER``), which its
YAML cannot express; :attr:`ldc` is that model (None for other devices), where a test sets its faults.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from labqfl.sim_backends.pro8000 import LDCModel, emulate_ld_current, is_pro8000
from pyvisa_sim.parser import get_devices


class VisaSimTCPServer:
    """One pyvisa-sim ``resource`` of ``yaml_path`` behind a loopback TCP port (0 = pick a free one)."""

    def __init__(self, yaml_path: str | Path, resource: str, *, port: int = 0) -> None:
        self.device = get_devices(str(yaml_path), False)[resource]
        #: the LDC's actual-current model of a PRO8000 device (``:ILD:ACT?``); None for any other device
        self.ldc: LDCModel | None = emulate_ld_current(self.device) if is_pro8000(self.device) else None
        self.lock = threading.Lock()
        self.received: list[str] = []
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", port))
        self.port = self._server.getsockname()[1]
        self._server.settimeout(0.2)  # here, not in the thread: a server closed at once has no socket left there
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def resource(self) -> str:
        return f"TCPIP0::127.0.0.1::{self.port}::SOCKET"

    def _exchange(self, message: str) -> bytes:
        """Feed one message to the device; return its reply (without termination), or b"" if none."""
        dev = self.device
        with self.lock:
            dev.write(message.encode() + dev._query_eom)
            out = bytearray()
            while True:
                b, _end = dev.read()
                if not b:
                    break
                out += b
        return bytes(out).rstrip(b"\r\n")

    def ask(self, message: str) -> str:
        """Query the device directly (not recorded in :attr:`received`)."""
        return self._exchange(message).decode()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
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
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = line.rstrip(b"\r").decode(errors="replace")
                with self.lock:
                    self.received.append(msg)
                reply = self._exchange(msg)
                if reply:
                    try:
                        conn.sendall(reply + b"\n")
                    except OSError:
                        return
        conn.close()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        for c in self._conns:
            c.close()

    def __enter__(self) -> VisaSimTCPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["VisaSimTCPServer"]
