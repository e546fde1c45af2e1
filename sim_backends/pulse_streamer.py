"""Protocol-level emulator of a Swabian Pulse Streamer 8/2, on a loopback address, in virtual time.

It answers the vendor's own client, ``pulsestreamer`` 2.1.2 from the package index (MIT,
© Swabian Instruments), over the two transports that client uses, so the driver
:class:`labqfl.drivers.swabian_pulsestreamer.SwabianPulseStreamer` runs unchanged against it:

* **JSON-RPC 2.0 over HTTP**, ``POST http://<ip>:8050/json-rpc`` (``pulsestreamer/jrpc/
  pulse_streamer_jrpc.py``: ``RPCClient(JSONRPCProtocol(), HttpPostClientTransport(url))``).
  Methods served: ``getSerial``, ``getFirmwareVersion``, ``getHardwareVersion``, ``isRunning``,
  ``reset``, ``constant``, ``forceFinal``, ``start``, ``startNow``, ``isReadyForData``,
  ``isStreaming``, ``hasSequence``, ``hasFinished``, ``getStreamingState``, ``getUnderflow``,
  ``selectClock``/``getClock`` (``ClockSource``: INTERNAL 0, EXT_125MHZ 1, EXT_10MHZ 2),
  ``setTrigger``/``getTriggerStart``/``getTriggerRearm``/``rearm`` (``TriggerStart``,
  ``TriggerRearm``), ``getTemperature``.
* **The binary upload port**, TCP 21328 (``pulsestreamer/pulse_streamer_base.py``,
  ``__send_cmd_binary``), used by the client for firmware >= 1.1.0: a 32-byte command header
  ``<4I2Q`` (magic 0x53504953, command id, command, 0, payload length, 0), a 32-byte parameter
  header — command 0x0 ``stream``: ``<qQ2h4BQ`` (n_runs, pulses, final a0, a1, digi, 0, 0, 0,
  slot); command 0x100 ``upload``: ``<qQ2h8BI`` (n_runs, pulses, idle a0, a1, digi, 0, 0, 0, slot,
  next action, when, on-no-data, 0) — then ``pulses`` steps ``<IBhh`` (duration [ns], digital mask,
  a0, a1 in units of 1 V/0x7fff) padded to 32 bytes. The answer is ``<4I2Q`` echoing the command
  id with an error code (0 = accepted) and, for an upload, 32 bytes ``<8i`` whose first word is
  the upload's return value (0 = stored).

Sequences are run-length encoded (duration in ns, level) — Pulse Streamer 8/2 documentation,
"Programming interface: Pulse pattern"; 8 digital channels at 1 GSa/s, 2 analog ±1 V
("Hardware: Output Channels").

**Slot streaming (double buffering).** Two memory slots (0, 1): ``upload`` fills one while the
other plays; a slot's ``NextAction`` (STOP, SWITCH_SLOT, SWITCH_SLOT_EXPECT_NEW_DATA, REPEAT_SLOT)
says what follows it, and ``OnNoData`` (ERROR, WAIT_IDLING, WAIT_REPEATING) what happens when the
next slot holds no new data at the switch: ERROR stops with state ERROR (an underflow), WAIT_IDLING
holds the idle level until data arrives, WAIT_REPEATING plays the old slot again.
``isReadyForData(slot)`` is true when that slot neither plays nor holds unplayed data;
``getStreamingState`` counts ``SlotChanges``. These rules are read from the vendor client's code
(the enums and methods of ``pulsestreamer`` 2.1.2); the v2.1 manual's section on slot streaming
was not available to this project, so they are this emulator's reading, to be checked on a device.

**Virtual time.** Nothing plays until the test (or a simulated optical layer) calls
:meth:`PulseStreamerEmulator.advance`: playback is exact and deterministic, never tied to the
wall clock. What was played is kept in :attr:`PulseStreamerEmulator.played` (one
:class:`PlayedSegment` per slot run, with its start time) and every underflow in
:attr:`PulseStreamerEmulator.underflows`; :func:`slot_levels` samples a segment's digital mask
at each slot centre, which is what a modulator driven by those channels would see.

The client's fixed ports (8050, 21328) are bound on a loopback address of its own
(127.a.b.c, chosen at random and checked free), so several emulators and parallel tests never
collide; Linux routes all of 127.0.0.0/8 to the loopback interface.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from labqfl.log import get_logger

_log = get_logger(__name__)

JSONRPC_PORT = 8050
BINARY_PORT = 21328
MAGIC = 0x53504953
CMD_STREAM = 0x0
CMD_UPLOAD = 0x100
#: One step of a sequence on the wire (pulsestreamer ``Sequence.pulse_dtype``, packed, 9 bytes).
PULSE_DTYPE = np.dtype([("count", "<u4"), ("digi", "<u1"), ("a0", "<i2"), ("a1", "<i2")])
#: Steps one sequence may hold (the vendor client refuses more: "exceeds the limit of two million
#: sequence steps", ``PulseStreamerBase.enc_binary``).
MAX_STEPS = 2_000_000

# enums of pulsestreamer.enums (values as on the wire)
STATE_IDLING, STATE_BREAKPOINT, STATE_STREAMING, STATE_FINISHED, STATE_ERROR = 0, 1, 2, 3, 4
COND_NONE, COND_WAIT_TRIGGER, COND_WAIT_REARM, COND_WAIT_DATA, COND_WAIT_START = 0, 1, 2, 3, 4
NEXT_STOP, NEXT_SWITCH, NEXT_SWITCH_EXPECT_NEW, NEXT_REPEAT = 0, 1, 2, 3
WHEN_IMMEDIATE, WHEN_TRIGGER = 0, 1
NODATA_ERROR, NODATA_WAIT_IDLING, NODATA_WAIT_REPEATING = 0, 1, 2
TRIG_IMMEDIATE, TRIG_SOFTWARE = 0, 1
CLOCK_NAMES = {0: "INTERNAL", 1: "EXT_125MHZ", 2: "EXT_10MHZ"}


@dataclass
class _Slot:
    steps: np.ndarray | None = None
    n_runs: int = 1
    idle: tuple[int, int, int] = (0, 0, 0)  # digi, a0, a1
    next_action: int = NEXT_SWITCH_EXPECT_NEW
    on_nodata: int = NODATA_ERROR
    fresh: bool = False  # holds data not yet played

    @property
    def duration_ns(self) -> int:
        if self.steps is None:
            return 0
        return int(self.steps["count"].astype(np.int64).sum()) * max(self.n_runs, 1)


@dataclass
class PlayedSegment:
    """One run of a slot (or of a ``stream`` sequence) on the outputs: starting at ``start_ns``
    (virtual time), its steps repeated ``n_runs`` times. ``complete`` is False when it was cut
    short (``forceFinal``/``constant``/``reset``) — then only ``played_ns`` of it came out."""

    start_ns: int
    slot: int
    steps: np.ndarray
    n_runs: int
    played_ns: int
    complete: bool

    @property
    def duration_ns(self) -> int:
        return int(self.steps["count"].astype(np.int64).sum()) * max(self.n_runs, 1)


@dataclass
class Underflow:
    """The generator had nothing to play at ``time_ns``: ``reason`` says why."""

    time_ns: int
    slot: int
    reason: str


def slot_levels(segment: PlayedSegment, slot_ns: int) -> np.ndarray:
    """Digital mask (uint8) of each slot of a played segment, sampled at slot centres.

    Slot ``n`` of the segment is sampled at ``n·slot_ns + slot_ns // 2`` after its start; only the
    part that actually came out (``played_ns``) is sampled.
    """
    steps = segment.steps
    ends = np.cumsum(steps["count"].astype(np.int64))
    one = int(ends[-1]) if ends.size else 0
    n = segment.played_ns // int(slot_ns)
    if one == 0 or n == 0:
        return np.zeros(0, dtype=np.uint8)
    t = (np.arange(n, dtype=np.int64) * int(slot_ns) + int(slot_ns) // 2) % one
    idx = np.searchsorted(ends, t, side="right")
    return steps["digi"][idx].astype(np.uint8)


class PulseStreamerEmulator:
    """A Pulse Streamer 8/2 answering the vendor client on ``self.ip`` (ports 8050 and 21328)."""

    def __init__(self, *, serial: str = "00:26:32:f0:92:42", firmware: str = "2.1.0", ip: str | None = None) -> None:
        self.serial = serial
        self.firmware = firmware
        self.lock = threading.RLock()
        #: notified after every command (an upload, a start, a stop): :meth:`wait_fed` waits on it
        self.fed = threading.Condition(self.lock)
        self.requests: list[tuple[str, list[Any]]] = []  # every JSON-RPC call (method, params)
        self.binary_commands: list[dict[str, Any]] = []  # every binary command's parameters
        self._reset_state()
        self._http, self._bin, self.ip = self._bind(ip)
        handler = self._make_handler()
        self._http.RequestHandlerClass = handler  # type: ignore[assignment]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True),
                         threading.Thread(target=self._accept_binary, daemon=True)]
        for t in self._threads:
            t.start()

    # -- sockets --------------------------------------------------------------------------------
    @staticmethod
    def _bind(fixed: str | None = None) -> tuple[ThreadingHTTPServer, socket.socket, str]:
        """Bind both ports on ``fixed`` (a loopback address) or on a random free 127.a.b.c."""
        rng = random.Random()
        last: OSError | None = None
        for _ in range(1 if fixed else 64):
            ip = fixed or f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            try:
                http = ThreadingHTTPServer((ip, JSONRPC_PORT), BaseHTTPRequestHandler)
            except OSError as exc:
                last = exc
                continue
            try:
                b = socket.create_server((ip, BINARY_PORT))
            except OSError as exc:
                http.server_close()
                last = exc
                continue
            http.daemon_threads = True
            return http, b, ip
        where = f"address {fixed}" if fixed else "loopback address"
        raise OSError(f"no free {where} for ports {JSONRPC_PORT}/{BINARY_PORT}: {last}")

    def close(self) -> None:
        self._stop.set()
        self._http.shutdown()
        self._http.server_close()
        try:
            self._bin.close()
        except OSError:
            pass

    def __enter__(self) -> PulseStreamerEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state ----------------------------------------------------------------------------------
    def _reset_state(self) -> None:
        self.now_ns = 0
        self.clock = 0
        self.trigger_start = TRIG_IMMEDIATE
        self.trigger_rearm = 0
        self.slots = [_Slot(), _Slot()]
        self.playing: int | None = None
        self.play_start_ns = 0
        self.state = STATE_IDLING
        self.condition = COND_NONE
        self.error_message = ""
        self.slot_changes = 0
        self.slots_to_run = -1
        self.slots_run = 0
        self.armed_slot: int | None = None
        self.waiting_since: int | None = None
        self.underflow_ns = 0
        self.waiting_data_ns = 0
        self.streaming_ns = 0
        self.output: tuple[int, int, int] = (0, 0, 0)
        self.played: list[PlayedSegment] = []
        self.underflows: list[Underflow] = []
        self.constants: list[tuple[int, tuple[int, int, int]]] = []

    def state_summary(self) -> dict[str, Any]:
        with self.lock:
            return {"now_ns": self.now_ns, "state": self.state, "clock": CLOCK_NAMES[self.clock],
                    "trigger_start": self.trigger_start, "output": self.output, "slot_changes": self.slot_changes,
                    "underflows": len(self.underflows), "playing": self.playing}

    # -- virtual time -----------------------------------------------------------------------------
    def advance(self, ns: int) -> None:
        """Let ``ns`` nanoseconds of playback pass."""
        if ns < 0:
            raise ValueError(f"advance needs ns >= 0, got {ns}")
        with self.lock:
            end = self.now_ns + int(ns)
            while True:
                if self.playing is None:
                    if self.waiting_since is not None:
                        self.waiting_data_ns += end - self.now_ns
                    self.now_ns = end
                    return
                slot = self.slots[self.playing]
                if slot.n_runs < 0:  # plays until stopped
                    self.streaming_ns += end - self.now_ns
                    self.now_ns = end
                    return
                done_at = self.play_start_ns + slot.duration_ns
                if done_at > end:
                    self.streaming_ns += end - self.now_ns
                    self.now_ns = end
                    return
                self.streaming_ns += done_at - self.now_ns
                self.now_ns = done_at
                self._slot_done()

    def _begin(self, slot_nr: int) -> None:
        s = self.slots[slot_nr]
        self.playing = slot_nr
        self.play_start_ns = self.now_ns
        self.state, self.condition = STATE_STREAMING, COND_NONE
        s.fresh = False
        if self.waiting_since is not None:
            self.waiting_since = None

    def _record(self, complete: bool) -> None:
        assert self.playing is not None
        s = self.slots[self.playing]
        assert s.steps is not None
        played = (self.now_ns - self.play_start_ns) if not complete else s.duration_ns
        self.played.append(PlayedSegment(self.play_start_ns, self.playing, s.steps, s.n_runs, played, complete))

    def _stop_playing(self, final: tuple[int, int, int], state: int) -> None:
        if self.playing is not None:
            self._record(complete=False)
        self.playing = None
        self.waiting_since = None
        self.output = final
        self.state, self.condition = state, COND_NONE

    def _slot_done(self) -> None:
        cur = self.playing
        assert cur is not None
        s = self.slots[cur]
        self._record(complete=True)
        self.slots_run += 1
        if self.slots_to_run > 0 and self.slots_run >= self.slots_to_run:
            self.playing = None
            self.output = s.idle
            self.state, self.condition = STATE_FINISHED, COND_NONE
            return
        if s.next_action == NEXT_STOP:
            self.playing = None
            self.output = s.idle
            self.state, self.condition = STATE_FINISHED, COND_NONE
            return
        if s.next_action == NEXT_REPEAT:
            self.play_start_ns = self.now_ns
            return
        other = 1 - cur
        o = self.slots[other]
        if o.fresh or (s.next_action == NEXT_SWITCH and o.steps is not None):
            self.slot_changes += 1
            self._begin(other)
            return
        # the next slot has no new data: an underflow
        if s.on_nodata == NODATA_WAIT_REPEATING:
            self.underflows.append(Underflow(self.now_ns, other, "no new data: repeating the last slot"))
            self._begin(cur)
            return
        self.underflows.append(Underflow(self.now_ns, other, f"no new data in slot {other} at the switch"))
        self.playing = None
        self.output = s.idle
        if s.on_nodata == NODATA_WAIT_IDLING:
            self.state, self.condition = STATE_STREAMING, COND_WAIT_DATA
            self.waiting_since = self.now_ns
            self.armed_slot = other
        else:
            self.state, self.condition = STATE_ERROR, COND_NONE
            self.error_message = f"underflow: slot {other} held no new data when slot {cur} ended"

    # -- commands ---------------------------------------------------------------------------------
    def _upload(self, slot_nr: int, steps: np.ndarray, n_runs: int, idle: tuple[int, int, int], next_action: int,
                when: int, on_nodata: int) -> int:
        if slot_nr not in (0, 1):
            return 2
        if self.playing == slot_nr or self.slots[slot_nr].fresh:
            return 1  # the slot still plays or holds unplayed data
        self.slots[slot_nr] = _Slot(steps, int(n_runs), idle, next_action, on_nodata, fresh=True)
        if self.state == STATE_STREAMING and self.condition == COND_WAIT_DATA and self.armed_slot == slot_nr:
            self.underflow_ns += self.now_ns - (self.waiting_since or self.now_ns)
            self.slot_changes += 1
            self._begin(slot_nr)
        elif self.state == STATE_IDLING and self.condition == COND_WAIT_DATA and self.armed_slot == slot_nr \
                and self.trigger_start == TRIG_IMMEDIATE:
            self._begin(slot_nr)
        return 0

    def _stream(self, steps: np.ndarray, n_runs: int, final: tuple[int, int, int]) -> None:
        self._stop_playing(self.output, STATE_IDLING)
        self.slots = [_Slot(steps, int(n_runs), final, NEXT_STOP, NODATA_ERROR, fresh=True), _Slot()]
        self.slots_to_run, self.slots_run = -1, 0
        if self.trigger_start == TRIG_IMMEDIATE:
            self._begin(0)
        else:
            self.armed_slot = 0
            self.condition = COND_WAIT_TRIGGER

    def hardware_trigger(self) -> None:
        """An edge on the trigger input (starts an armed sequence when the trigger is hardware)."""
        with self.lock:
            if self.trigger_start >= 2 and self.armed_slot is not None and self.playing is None:
                self._begin(self.armed_slot)

    # -- what a simulated optical layer asks (virtual-time lockstep) ---------------------------
    def boundary_ns(self) -> int | None:
        """When the slot now playing ends (virtual ns), or None (nothing plays, or it repeats forever)."""
        with self.lock:
            if self.playing is None:
                return None
            s = self.slots[self.playing]
            return None if s.n_runs < 0 else self.play_start_ns + s.duration_ns

    def next_ready(self) -> bool:
        """True when the end of the slot now playing will not be an underflow: nothing plays, the slot
        stops or repeats there, or the other slot holds new data."""
        with self.lock:
            if self.playing is None:
                return True
            s = self.slots[self.playing]
            if s.n_runs < 0 or s.next_action in (NEXT_STOP, NEXT_REPEAT):
                return True
            if self.slots_to_run > 0 and self.slots_run + 1 >= self.slots_to_run:
                return True
            o = self.slots[1 - self.playing]
            return o.fresh or (s.next_action == NEXT_SWITCH and o.steps is not None)

    def wait_fed(self, timeout_s: float) -> bool:
        """Wait (wall clock, at most ``timeout_s``) until :meth:`next_ready`; True if it is."""
        with self.fed:
            return self.fed.wait_for(self.next_ready, timeout_s)

    def armed(self) -> bool:
        """A stream is playing, or armed with data and waiting for its trigger."""
        with self.lock:
            if self.playing is not None:
                return True
            return self.armed_slot is not None and self.slots[self.armed_slot].fresh

    def wait_armed(self, timeout_s: float) -> bool:
        """Wait (wall clock, at most ``timeout_s``) until :meth:`armed`; True if it is."""
        with self.fed:
            return self.fed.wait_for(self.armed, timeout_s)

    def take_played(self) -> list[PlayedSegment]:
        """The segments completed (or cut) since the last call, and forget them (bounded memory)."""
        with self.lock:
            out, self.played = self.played, []
            return out

    def current_segment(self) -> PlayedSegment | None:
        """The slot now playing as a segment cut at the present virtual time (not recorded)."""
        with self.lock:
            if self.playing is None:
                return None
            s = self.slots[self.playing]
            assert s.steps is not None
            return PlayedSegment(self.play_start_ns, self.playing, s.steps, s.n_runs, self.now_ns - self.play_start_ns,
                                 False)

    # -- JSON-RPC ---------------------------------------------------------------------------------
    def _rpc(self, method: str, params: list[Any]) -> Any:
        with self.lock:
            try:
                return self._rpc_locked(method, params)
            finally:
                self.fed.notify_all()

    def _rpc_locked(self, method: str, params: list[Any]) -> Any:
        with self.lock:
            self.requests.append((method, list(params)))
            if method == "getSerial":
                return self.serial
            if method == "getFPGAID":
                return "0x0123456789abcdef"
            if method == "getFirmwareVersion":
                return self.firmware
            if method == "getHardwareVersion":
                return "1.2"
            if method == "getTemperature":
                return "45.0"
            if method == "isRunning" or method == "isStreaming":
                return 1 if self.playing is not None else 0
            if method == "hasSequence":
                return 1 if any(s.steps is not None for s in self.slots) else 0
            if method == "hasFinished":
                return 1 if self.state == STATE_FINISHED else 0
            if method == "reset":
                self._stop_playing((0, 0, 0), STATE_IDLING)
                self._reset_state_keep_history()
                return 0
            if method == "constant":
                _, digi, a0, a1 = params[0]
                self._stop_playing((int(digi), int(a0), int(a1)), STATE_IDLING)
                self.slots, self.armed_slot = [_Slot(), _Slot()], None  # the next stream is armed by its start()
                self.constants.append((self.now_ns, self.output))
                return 0
            if method == "forceFinal":
                final = self.slots[self.playing].idle if self.playing is not None else self.output
                self._stop_playing(final, STATE_FINISHED)
                self.slots, self.armed_slot = [_Slot(), _Slot()], None
                return 0
            if method == "start":
                slot_nr, to_run = int(params[0]), int(params[1])
                self.slots_to_run, self.slots_run = to_run, 0
                self.armed_slot = slot_nr
                if self.trigger_start == TRIG_IMMEDIATE and self.slots[slot_nr].fresh:
                    self._begin(slot_nr)
                else:
                    self.state = STATE_IDLING
                    self.condition = COND_WAIT_DATA if not self.slots[slot_nr].fresh else COND_WAIT_TRIGGER
                return 0
            if method == "startNow":
                if self.armed_slot is not None and self.playing is None and self.slots[self.armed_slot].fresh:
                    self._begin(self.armed_slot)
                return 0
            if method == "isReadyForData":
                slot_nr = int(params[0])
                s = self.slots[slot_nr]
                return 1 if (self.playing != slot_nr and not s.fresh) else 0
            if method == "getStreamingState":
                return {"TotalTime": self.now_ns, "StreamingTime": self.streaming_ns,
                        "UnderflowTime": self.underflow_ns, "WaitingDataTime": self.waiting_data_ns,
                        "State": self.state, "StateCondition": self.condition, "ErrorMessage": self.error_message,
                        "SlotChanges": self.slot_changes}
            if method == "getUnderflow":
                return 1 if self.underflows else 0
            if method == "selectClock":
                value = int(params[0])
                if value not in CLOCK_NAMES:
                    raise ValueError(f"unknown clock source {value}")
                self.clock = value
                return 0
            if method == "getClock":
                return self.clock
            if method == "setTrigger":
                self.trigger_start, self.trigger_rearm = int(params[0]), int(params[1])
                return 0
            if method == "getTriggerStart":
                return self.trigger_start
            if method == "getTriggerRearm":
                return self.trigger_rearm
            if method == "rearm":
                return 1
            raise KeyError(method)

    def _reset_state_keep_history(self) -> None:
        played, underflows, constants, now = self.played, self.underflows, self.constants, self.now_ns
        self._reset_state()
        self.played, self.underflows, self.constants, self.now_ns = played, underflows, constants, now

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                n = int(self.headers.get("Content-Length", "0"))
                req = json.loads(self.rfile.read(n) or b"{}")
                rid = req.get("id")
                try:
                    result = emulator._rpc(str(req.get("method")), list(req.get("params") or []))
                    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "result": result}
                except KeyError:
                    body = {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}}
                except (ValueError, IndexError, TypeError) as exc:
                    body = {"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": f"Invalid params: {exc}"}}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    # -- binary port ------------------------------------------------------------------------------
    def _accept_binary(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._bin.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_binary, args=(conn,), daemon=True).start()

    @staticmethod
    def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _serve_binary(self, conn: socket.socket) -> None:
        with conn:
            while not self._stop.is_set():
                try:
                    head = self._recv_exact(conn, 32)
                except OSError:
                    return
                if head is None:
                    return
                magic, cmd_id, command, _, length, _ = struct.unpack("<4I2Q", head)
                body = self._recv_exact(conn, int(length))
                if body is None:
                    return
                err, extra = self._binary_command(magic, command, body)
                conn.sendall(struct.pack("<4I2Q", MAGIC, cmd_id, err, 0, len(extra), 0) + extra)

    def _binary_command(self, magic: int, command: int, body: bytes) -> tuple[int, bytes]:
        if magic != MAGIC or len(body) < 32:
            return 3, b""
        with self.lock:
            if command == CMD_UPLOAD:
                (n_runs, pulses, a0, a1, digi, _, _, _, slot_nr, next_action, when, on_nodata,
                 _) = struct.unpack("<qQ2h8BI", body[:32])
            elif command == CMD_STREAM:
                n_runs, pulses, a0, a1, digi, _, _, _, slot_nr = struct.unpack("<qQ2h4BQ", body[:32])
                next_action, when, on_nodata = NEXT_STOP, WHEN_IMMEDIATE, NODATA_ERROR
            else:
                return 4, b""
            if pulses > MAX_STEPS or 32 + 9 * pulses > len(body):
                return 5, b""
            steps = np.frombuffer(body, dtype=PULSE_DTYPE, count=int(pulses), offset=32).copy()
            idle = (int(digi), int(a0), int(a1))
            self.binary_commands.append({"command": command, "n_runs": n_runs, "pulses": int(pulses), "idle": idle,
                                         "slot": int(slot_nr), "next_action": next_action, "when": when,
                                         "on_nodata": on_nodata, "clock": self.clock})
            if command == CMD_STREAM:
                self._stream(steps, int(n_runs), idle)
                self.fed.notify_all()
                return 0, b""
            rv = self._upload(int(slot_nr), steps, int(n_runs), idle, int(next_action), int(when), int(on_nodata))
            self.fed.notify_all()
            return 0, struct.pack("<8i", rv, 0, 0, 0, 0, 0, 0, 0)


class PlayedLevels:
    """What an emulated pattern generator played, as the modulation source of the simulated optical layer.

    Built from the emulator's played segments (:meth:`from_emulator`), decoded per slot with the
    driver's level coding (``decode(digi) -> {"phase_idx", "intensity_idx", "dark"}``): slot
    ``first_slot + n`` of the acquisition is the ``n``-th slot played. It answers the two questions
    :meth:`labqfl.sim_backends.testbed.SagnacTestbed.stream_with` asks of a client's modulation
    source — ``fill_codes(s0, out)`` (codes ``k·4 + a``) and ``choices(slots)`` — with the levels that
    came out of the instrument, not with the client's log. A dark slot (code 0: no marker, intensity
    modulator at extinction) is played as ``dark_intensity_idx`` (the client's vacuum level) with phase 0.
    Asking for a slot that was never played raises ``ValueError``: the loop cannot carry light the
    generator did not modulate.
    """

    def __init__(self, client: str, phase_idx: np.ndarray, intensity_idx: np.ndarray, dark: np.ndarray, *,
                 first_slot: int, dark_intensity_idx: int) -> None:
        self.client = client
        self.first_slot = int(first_slot)
        k = np.where(dark, np.uint8(dark_intensity_idx), intensity_idx).astype(np.uint8)
        a = np.where(dark, np.uint8(0), phase_idx).astype(np.uint8)
        self.codes = (k * np.uint8(4) + a).astype(np.uint8)
        self.dark = np.asarray(dark, dtype=bool)

    @classmethod
    def from_emulator(cls, client: str, emulator: PulseStreamerEmulator, decode: Any, *, slot_ns: int,
                      first_slot: int, dark_intensity_idx: int) -> PlayedLevels:
        """Decode every segment the emulator played, in order; they must follow each other without a gap
        (one continuous stream on the slot grid)."""
        segs = list(emulator.played)
        t = segs[0].start_ns if segs else 0
        for s in segs:
            if s.start_ns != t:
                raise ValueError(f"played segments leave the slot grid: one starts at {s.start_ns} ns, expected {t} ns")
            t += s.played_ns
        digi = np.concatenate([slot_levels(s, slot_ns) for s in segs]) if segs else np.zeros(0, np.uint8)
        d = decode(digi)
        return cls(client, d["phase_idx"], d["intensity_idx"], d["dark"], first_slot=first_slot,
                   dark_intensity_idx=dark_intensity_idx)

    @property
    def n_slots(self) -> int:
        return int(self.codes.size)

    def _index(self, slots: np.ndarray) -> np.ndarray:
        i = np.asarray(slots, dtype=np.int64) - self.first_slot
        if i.size and (int(i.min()) < 0 or int(i.max()) >= self.codes.size):
            raise ValueError(f"client {self.client}: slots {int(i.min()) + self.first_slot} … "
                             f"{int(i.max()) + self.first_slot} asked, but the generator played slots "
                             f"{self.first_slot} … {self.first_slot + self.codes.size - 1}")
        return i

    def fill_codes(self, s0: int, out: np.ndarray) -> None:
        i = self._index(np.array([s0, s0 + len(out) - 1], dtype=np.int64)) if len(out) else None
        if i is not None:
            out[:] = self.codes[int(i[0]):int(i[0]) + len(out)]

    def choices(self, slots: np.ndarray) -> Any:
        from labqfl.contracts.types import ModulationRecord

        s = np.ascontiguousarray(slots, dtype=np.int64)
        c = self.codes[self._index(s)]
        return ModulationRecord(client=self.client, slots=s, intensity_idx=(c >> 2).astype(np.uint8),
                                phase_idx=(c & 3).astype(np.uint8))


# -- emulated pattern generators as the modulation source of the simulated loop -----------------------

_REGISTRY: dict[str, PulseStreamerEmulator] = {}
_REGISTRY_LOCK = threading.Lock()


def emulator_at(ip: str) -> PulseStreamerEmulator:
    """The emulator of this process listening on loopback address ``ip`` (started on first use).

    An emulated instrument stays on for the life of the process, like a device on the bench: a station
    opened again on the same address reaches the same emulator (its history is kept; each acquisition
    takes its own origin in virtual time). ``ip`` must lie in 127.0.0.0/8, so a real instrument's
    address can never be taken for an emulator's.
    """
    if not _is_loopback(ip):
        raise ValueError(f"an emulated Pulse Streamer listens on a loopback address (127.x.y.z); got {ip!r}")
    with _REGISTRY_LOCK:
        em = _REGISTRY.get(ip)
        if em is None:
            em = _REGISTRY[ip] = PulseStreamerEmulator(ip=ip)
        return em


def _is_loopback(ip: str) -> bool:
    parts = ip.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() and 0 <= int(p) <= 255 for p in parts)


@dataclass(frozen=True)
class Wiring:
    """Which digital outputs of a client's Pulse Streamer drive what (the driver's ``options``, with the
    driver's defaults: marker 0, phase bits [1, 2], intensity code bits [3, 4]) and how its modulators
    read them: phase index = the phase bits (LSB first); intensity code = the intensity bits, code 0 =
    dark (intensity modulator at extinction, no light), code c >= 1 = intensity index c − 1."""

    marker_channel: int = 0
    phase_channels: tuple[int, ...] = (1, 2)
    intensity_channels: tuple[int, ...] = (3, 4)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Wiring:
        d = cls()
        return cls(int(options.get("marker_channel", d.marker_channel)),
                   tuple(int(c) for c in options.get("phase_channels", d.phase_channels)),
                   tuple(int(c) for c in options.get("intensity_channels", d.intensity_channels)))

    def decode(self, digi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(phase index uint8, intensity code int16 (0 = dark), marker bool) of sampled digital masks."""
        d = np.asarray(digi, dtype=np.uint8)
        phase = np.zeros(d.shape, dtype=np.uint8)
        for bit, ch in enumerate(self.phase_channels):
            phase |= (((d >> ch) & 1) << bit).astype(np.uint8)
        code = np.zeros(d.shape, dtype=np.int16)
        for bit, ch in enumerate(self.intensity_channels):
            code |= (((d >> ch) & 1) << bit).astype(np.int16)
        return phase, code, ((d >> self.marker_channel) & 1).astype(bool)


def _sample(seg: PlayedSegment, t_from: int, t_to: int, origin: int, slot_ns: int) -> tuple[int, np.ndarray]:
    """(first slot n0, digital masks of slots n0, n0 + 1, …): the slots whose centres
    ``origin + n·slot_ns + slot_ns//2`` lie in [t_from, t_to) and inside the part of ``seg`` that came out."""
    lo, hi = max(t_from, seg.start_ns), min(t_to, seg.start_ns + seg.played_ns)
    half = slot_ns // 2
    n0 = -(-(lo - origin - half) // slot_ns)
    n1 = -(-(hi - origin - half) // slot_ns)
    if n1 <= n0:
        return 0, np.zeros(0, np.uint8)
    counts = seg.steps["count"].astype(np.int64)
    if seg.n_runs == 1 and (seg.start_ns - origin) % slot_ns == 0 and not (counts % slot_ns).any():
        # steps of whole slots on the slot grid (what the driver uploads): one level per slot by repetition
        first = (seg.start_ns - origin) // slot_ns
        return n0, np.repeat(seg.steps["digi"], counts // slot_ns)[n0 - first:n1 - first].astype(np.uint8)
    n = np.arange(n0, n1, dtype=np.int64)
    ends = np.cumsum(counts)
    one = int(ends[-1])
    t = (origin + n * slot_ns + half - seg.start_ns) % one
    return n0, seg.steps["digi"][np.searchsorted(ends, t, side="right")].astype(np.uint8)


class EmulatedLevels:
    """One client's levels as its emulated pattern generator played them, slot by slot: the modulation
    source the simulated loop reads (``fill_codes(s0, out)``, ``choices(slots)``) instead of the client's
    log. Slots the generator did not play (before its stream, after an underflow or a stop) are dark.
    Filled by :class:`EmulatedModulators`; holds only the slots from :meth:`release` on."""

    def __init__(self, client: str, wiring: Wiring, n_intensities: int, dark_index: int) -> None:
        self.client = client
        self.wiring = wiring
        self.n_intensities = int(n_intensities)
        self.dark_index = int(dark_index)
        self.base = 0  # acquisition slot of codes[0]
        self.codes = np.zeros(0, dtype=np.uint8)
        self.marker = np.zeros(0, dtype=bool)
        # every 8-bit output mask → drive code k·4 + a (dark: the dark index, phase 0), marker, intensity code
        phase, code, marker = wiring.decode(np.arange(256, dtype=np.uint8))
        dark = code == 0
        self._lut_code = np.where(dark, self.dark_index * 4, (code - 1) * 4 + phase).astype(np.uint8)
        self._lut_marker = marker & ~dark
        self._lut_bad = code > self.n_intensities

    @property
    def end(self) -> int:
        """One past the last slot known."""
        return self.base + int(self.codes.size)

    def extend(self, n_end: int, runs: list[tuple[int, np.ndarray]]) -> None:
        """Slots up to ``n_end`` (exclusive): the given runs (first slot, masks of consecutive slots);
        every other slot dark (output mask 0)."""
        m = n_end - self.end
        if m <= 0:
            return
        digi = np.zeros(m, dtype=np.uint8)
        for s0, d in runs:
            digi[s0 - self.end:s0 - self.end + d.size] = d
        if self._lut_bad[digi].any():
            raise ValueError(f"client {self.client}: its pattern generator played an intensity code above "
                             f"{self.n_intensities}, but the client has {self.n_intensities} intensities "
                             f"(codes 1..{self.n_intensities}, 0 = dark)")
        self.codes = np.concatenate([self.codes, self._lut_code[digi]])
        self.marker = np.concatenate([self.marker, self._lut_marker[digi]])

    def release(self, before: int) -> None:
        """Forget slots before ``before`` (the simulated loop is done with them)."""
        cut = min(max(before - self.base, 0), self.codes.size)
        if cut:
            self.codes, self.marker = self.codes[cut:].copy(), self.marker[cut:].copy()
            self.base += cut

    def _index(self, slots: np.ndarray) -> np.ndarray:
        i = np.asarray(slots, dtype=np.int64) - self.base
        if i.size and (int(i.min()) < 0 or int(i.max()) >= self.codes.size):
            raise ValueError(f"client {self.client}: slots {int(i.min()) + self.base} … {int(i.max()) + self.base} "
                             f"asked, but the emulated generator's levels are known for slots {self.base} … "
                             f"{self.end - 1}")
        return i

    def fill_codes(self, s0: int, out: np.ndarray) -> None:
        if len(out):
            i = int(self._index(np.array([s0, s0 + len(out) - 1]))[0])
            out[:] = self.codes[i:i + len(out)]

    def choices(self, slots: np.ndarray) -> Any:
        from labqfl.contracts.types import ModulationRecord

        s = np.ascontiguousarray(slots, dtype=np.int64)
        c = self.codes[self._index(s)]
        return ModulationRecord(client=self.client, slots=s, intensity_idx=(c >> 2).astype(np.uint8),
                                phase_idx=(c & 3).astype(np.uint8))

    def markers(self, slots: np.ndarray) -> np.ndarray:
        """Whether the marker output was high (and the slot not dark) at each slot."""
        return self.marker[self._index(slots)]


class EmulatedModulators:
    """The clients' emulated Pulse Streamers, played in lockstep on one virtual clock by the simulated loop.

    ``emulators``/``wiring``: per client. :meth:`begin` (at the start of an acquisition) waits until every
    generator has its stream armed (the client's streamer uploaded its first frames), then starts them all
    at one virtual instant — the start pulse of the master clock at their trigger inputs, or at once for
    ``trigger = "immediate"``; that instant is slot 0. :meth:`play_until` lets virtual time run to a slot,
    stopping at every end of an upload until the generator's next upload is in (the feeder's turn), at most
    ``feed_timeout_s`` of wall-clock time per upload — a generator still unfed then underflows, as hardware
    whose host fell behind would. The levels each generator played fill its client's :class:`EmulatedLevels`.
    """

    def __init__(self, emulators: dict[str, PulseStreamerEmulator], levels: dict[str, EmulatedLevels], *,
                 slot_ns: int, feed_timeout_s: float = 10.0) -> None:
        self.emulators = dict(emulators)
        self.levels = dict(levels)
        self.slot_ns = int(slot_ns)
        self.feed_timeout_s = float(feed_timeout_s)
        self.origin_ns = 0
        self.underflow_waits = 0  # boundaries where a generator was still unfed after feed_timeout_s

    def align(self) -> None:
        """Bring every emulator to the same virtual time (the latest of them; idle time passes)."""
        t = max(em.now_ns for em in self.emulators.values())
        for em in self.emulators.values():
            em.advance(t - em.now_ns)

    def begin(self) -> None:
        """A new acquisition: wait for every generator's armed stream, trigger them together (slot 0).
        Call :meth:`align` before the clients start their streams."""
        times = {em.now_ns for em in self.emulators.values()}
        if len(times) != 1:
            raise RuntimeError(f"the emulated generators' clocks differ ({sorted(times)} ns); call align() before "
                               "the clients start their streams")
        self.origin_ns = times.pop()
        for c, em in self.emulators.items():
            if not em.wait_armed(self.feed_timeout_s):
                raise RuntimeError(f"client {c}: its pattern generator was not armed within {self.feed_timeout_s:g} s; "
                                   "expected its frame stream started on this acquisition (labqfl acquire starts every "
                                   "client's stream; labqfl run and distill --live do not)")
        for em in self.emulators.values():
            em.hardware_trigger()
            em.take_played()  # what came out before this acquisition is not part of it
        for lv in self.levels.values():
            lv.base, lv.codes, lv.marker = 0, np.zeros(0, np.uint8), np.zeros(0, bool)

    def play_until(self, slot: int) -> None:
        """Let virtual time run until slot ``slot`` (exclusive) has been played by every generator."""
        target = self.origin_ns + int(slot) * self.slot_ns
        self._run_to(target)
        self._collect(int(slot))

    def finish(self) -> None:
        """Play every generator to the end of the upload now playing (its frames get their verdicts)."""
        ends = [b for b in (em.boundary_ns() for em in self.emulators.values()) if b is not None]
        if ends:
            self._run_to(max(ends))

    def _run_to(self, target: int) -> None:
        ems = list(self.emulators.values())
        while True:
            now = ems[0].now_ns
            if now >= target:
                return
            bounds = [em.boundary_ns() for em in ems]
            t_next = min([target, *[b for b in bounds if b is not None]])
            for em, b in zip(ems, bounds, strict=True):
                if b is not None and b == t_next and not em.wait_fed(self.feed_timeout_s):
                    self.underflow_waits += 1
            for em in ems:
                em.advance(t_next - em.now_ns)

    def _collect(self, n_end: int) -> None:
        t_to = self.origin_ns + n_end * self.slot_ns
        for c, em in self.emulators.items():
            lv = self.levels[c]
            t_from = self.origin_ns + lv.end * self.slot_ns
            segs = em.take_played()
            cur = em.current_segment()
            runs = [_sample(seg, t_from, t_to, self.origin_ns, self.slot_ns)
                    for seg in [*segs, *([cur] if cur is not None else [])]]
            lv.extend(n_end, runs)

    def release(self, before: int) -> None:
        for lv in self.levels.values():
            lv.release(before)

    def frame_markers(self, frames: np.ndarray, frame_slots: int, client: str | None = None) -> np.ndarray:
        """True for each frame whose first slot carried the marker of the generator(s) wired to one tagger input.

        ``client=None`` (``time_tagger.marker_channel``): every client's generator, the markers reaching one
        input through a coincidence (AND) of all clients' marker outputs, so a frame lost at any client is
        missing at the detection node. ``client="C1"`` (``time_tagger.marker_channels``): that client's
        generator only, on its own input (a client without an emulated generator plays every frame)."""
        first = np.asarray(frames, dtype=np.int64) * int(frame_slots)
        ok = np.ones(first.shape, dtype=bool)
        for name, lv in self.levels.items():
            if client is None or name == client:
                ok &= lv.markers(first)
        return ok
