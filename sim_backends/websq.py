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

**As the station's detectors** (``simulation.emulate_detectors``: :class:`EmulatedDetectors`): one
emulator per controller resource of D0/D1, in the process that opens the detectors, on free loopback ports
(the driver is pointed at them instead of the resource's). Its state drives the simulated loop's detectors:
a channel clicks only while ``DetectorEnable`` is on and its bias current is above 0 µA, and its dark-count
rate follows the bias as a simulated detector's does (DCR₀·exp((I − I₀)/scale), I₀ the station file's
``bias_current_ua``); the counts port sends the clicks the simulated loop's tagger counts on that detector's
channel over each measurement period. Without a simulated loop in the process (over node processes the
detection node holds the controller, the optics node the loop) the controller counts the tag blocks the
detection node slots (:meth:`EmulatedDetectors.feed`, :class:`BlockCounts`): while an acquisition runs, each
enabled channel reports its detector's recent click rate in those blocks × the measurement period (rounded);
with no recent blocks (the acquisition's are forgotten when it ends, and a channel's when it is disarmed outside
one, so a dark re-arm reads dark counts) it reports its dark counts at the controller's bias (the simulated loop's law,
:func:`~labqfl.sim_backends.testbed.dark_count_rate_at`, Poisson-drawn). A disabled channel (``DetectorEnable``
off or its bias ≤ 0 µA) counts 0 either way, as a real controller's would.

**Latching** (review s36 M3). A real nanowire biased above its switching current, or hit by a bright pulse near
it, stays in its resistive state: biased, but counting nothing, until its bias is taken away. The emulator
models that: a channel whose bias is set above ``switching_current_ua`` (None: never on its own) while
``DetectorEnable`` is on, or one latched on demand (:meth:`WebSQEmulator.latch`, for tests), counts 0 on
the counts port (and its detector in the simulated loop clicks no more) until its bias is set to 0 µA or
``DetectorEnable`` is switched off. :attr:`WebSQEmulator.latched` holds each channel's state.

The emulator keeps the state a test reads back (:attr:`bias_ua`, :attr:`enabled`,
:attr:`bias_history` — every bias vector the controller accepted, so a ramp is visible step by step)
in the process that runs it, so a test can kill the client process and then read what the
controller was left with.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from labqfl.sim_backends.testbed import dark_bias_scale, dark_count_rate_at

from labqfl.config import InstrumentConfig, StationConfig
from labqfl.instruments.base import TagBlock

if TYPE_CHECKING:
    from labqfl.sim_backends.testbed import SagnacTestbed

#: Bias current range the vendor's client documents for its IV scans (µA).
BIAS_LIMIT_UA = 90.9
#: Shortest measurement period the vendor's client documents (ms).
MIN_PERIOD_MS = 10
ETB = "\x17"


#: ``counts(period_s)``: the counts of every channel over one measurement period, or None (no line sent)
CountSource = Callable[[float], "list[int] | None"]


class WebSQEmulator:
    """A WebSQ controller with ``n_detectors`` channels on two loopback ports (0 = pick free ports).

    ``counts``: where the count stream's numbers come from (:data:`CountSource`, called only while a client
    listens on the counts port); None: a stand-alone model, ``rate_hz_per_ua`` × bias on an enabled channel.
    ``on_change(emulator)``: called after every accepted command (outside the emulator's lock)."""

    def __init__(self, n_detectors: int = 2, *, control_port: int = 0, counts_port: int = 0,
                 rate_hz_per_ua: float = 100.0, counts: CountSource | None = None,
                 on_change: Callable[[WebSQEmulator], None] | None = None, temperature_k: float = 2.51,
                 switching_current_ua: float | None = None) -> None:
        self.n = int(n_detectors)
        self.lock = threading.RLock()
        self.bias_ua = [0.0] * self.n
        #: per channel: latched (biased, counting 0) until its bias is reset (module docstring)
        self.latched = [False] * self.n
        self.switching_current_ua = switching_current_ua
        self.trigger_mv = [25.0] * self.n
        self.enabled = False
        self.period_ms = 100
        self.temperature_k = float(temperature_k)
        self.rate_hz_per_ua = float(rate_hz_per_ua)
        self.counts = counts
        self.on_change = on_change
        self.bias_history: list[list[float]] = []
        self.received: list[dict[str, Any]] = []
        self._stop = threading.Event()
        #: set to end the count loop's wait early: a new measurement period, or close()
        self._wake = threading.Event()
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
                    "period_ms": self.period_ms, "bias_history": [list(b) for b in self.bias_history],
                    "latched": list(self.latched)}

    def latch(self, channel: int) -> None:
        """Latch ``channel`` (1-based) now, as a bright pulse would: it counts 0 until its bias is reset."""
        if not 1 <= channel <= self.n:
            raise ValueError(f"channel must be 1 to {self.n}, got {channel!r}")
        with self.lock:
            self.latched[channel - 1] = True
        if self.on_change is not None:
            self.on_change(self)

    def _update_latches(self) -> None:
        """After a bias or enable change: a channel without bias is free again; one biased above the switching
        current latches."""
        for i, b in enumerate(self.bias_ua):
            if not self.enabled or b <= 0:
                self.latched[i] = False
            elif self.switching_current_ua is not None and abs(b) > self.switching_current_ua:
                self.latched[i] = True

    def _label_values(self) -> dict[str, Any]:
        return {"NumberOfDetectors": self.n, "BiasCurrent": list(self.bias_ua), "TriggerLevel": list(self.trigger_mv),
                "DetectorEnable": self.enabled, "InptMeasurementPeriod": self.period_ms}

    # -- protocol ---------------------------------------------------------------------------------
    def handle(self, msg: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Apply one client message; return (replies to that client, broadcasts to every client)."""
        replies, broadcasts = self._apply(msg)
        if broadcasts and self.on_change is not None:
            self.on_change(self)
        return replies, broadcasts

    def _apply(self, msg: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
                    self._update_latches()
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
                    self._update_latches()
            elif command == "SetMeasurementPeriod":
                if not isinstance(value, int) or value < MIN_PERIOD_MS:
                    error = f"SetMeasurementPeriod: expected an integer >= {MIN_PERIOD_MS} ms, got {value!r}"
                else:
                    self.period_ms = value
                    self._wake.set()  # the measurement restarts with the new period (the next line after it)
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

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` (at most), or until the measurement period changes or the emulator closes."""
        self._wake.wait(max(0.0, seconds))
        self._wake.clear()

    def _count_loop(self) -> None:
        """One line per measurement period, as the controller sends them [W ``SQCounts.run``]: a period's counts
        are worked out during it (the time the count source takes is part of the period, not added to it)."""
        while not self._stop.is_set():
            t0 = time.monotonic()
            with self.lock:
                period = self.period_ms / 1e3
                counts: list[int] | None = [round(self.rate_hz_per_ua * b * period) if self.enabled and b > 0 else 0
                                            for b in self.bias_ua]
                clients = list(self._count_clients)
            if self.counts is not None:
                counts = self.counts(period) if clients else None  # a read-out only while someone listens
            if counts is None:
                self._pause(period - (time.monotonic() - t0))
                continue
            with self.lock:  # a latched nanowire counts nothing
                counts = [0 if i < self.n and self.latched[i] else c for i, c in enumerate(counts)]
            line = (",".join([f"{time.time():.3f}"] + [str(c) for c in counts]) + "\n").encode()
            for c in clients:
                try:
                    c.sendall(line)
                except OSError:
                    self._drop(c)
            self._pause(period - (time.monotonic() - t0))

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        for s in (self._ctl, self._cnt):
            s.close()
        with self.lock:
            for c in self._clients + self._count_clients:
                c.close()
            self._clients.clear()
            self._count_clients.clear()
        for t in self._threads:  # the listening sockets are released once their accept() returned
            if t is not threading.current_thread():
                t.join(timeout=2.0)

    def __enter__(self) -> WebSQEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Wall time [s] the last tag block fed stays recent outside an open acquisition (:class:`BlockCounts`).
HOLD_S = 1.0
#: Simulated time [s] of tag blocks kept: the longest measurement period the Eos driver reads.
KEEP_S = 10.0


class BlockCounts:
    """The clicks of each detector in the tag blocks a detection node slots, for its emulated controllers' count
    streams (over node processes: no simulated loop in the process). Thread-safe: fed by the node's acquisition,
    read by every controller's count loop.

    A block's clicks are its tags on the detector's tagger channel (``time_tagger.detector_channels``), its
    simulated duration the time from the previous block's last tag (0 at an acquisition's start, where
    :class:`~labqfl.instruments.base.TagBlock` timestamps start) to its own last tag, so consecutive blocks tile
    the acquisition; a block starting before the previous one ended starts a new acquisition. The rate for a
    measurement period P (:meth:`rates`) is the clicks over the duration of the latest blocks whose durations add
    up to ≥ P (all those kept, up to :data:`KEEP_S`, if fewer). Blocks are recent while an acquisition is open
    (:meth:`acquisition`, which starts with none and forgets them all when it ends: its light is gone) and, fed
    outside one, for ``hold_s`` of wall time after the last one fed. A detector disarmed outside an acquisition
    (:meth:`forget`: its bias taken away) forgets the blocks fed before, so armed again in the dark it counts only
    what is fed after (none: dark counts); inside one the blocks stay the light on its nanowire (a latch reset)."""

    def __init__(self, channels: dict[str, int], hold_s: float = HOLD_S) -> None:
        if hold_s < 0:
            raise ValueError(f"hold_s must be >= 0 s, got {hold_s!r}")
        self.channels = dict(channels)
        self.hold_s = float(hold_s)
        self._lock = threading.Lock()
        #: (sequence number, simulated s, clicks per detector)
        self._blocks: deque[tuple[int, float, dict[str, int]]] = deque()
        self._seq = 0
        #: detector -> the first block it counts (those before were fed before its last disarm: :meth:`forget`)
        self._from_seq: dict[str, int] = {}
        self._kept_s = 0.0
        self._last_ps = 0
        self._last_fed = -float("inf")
        self._open = 0

    def _clear(self) -> None:
        self._blocks.clear()
        self._kept_s = 0.0
        self._last_ps = 0
        self._last_fed = -float("inf")

    def feed(self, block: TagBlock) -> None:
        """Count one tag block (empty blocks carry no time: skipped)."""
        if not len(block):
            return
        per_channel = block.channel_counts()
        clicks = {r: per_channel.get(ch, 0) for r, ch in self.channels.items()}
        first, last = int(block.timestamps[0]), int(block.timestamps[-1])
        with self._lock:
            if first < self._last_ps:
                self._clear()
            duration = (last - self._last_ps) * 1e-12
            self._last_ps = last
            self._last_fed = time.monotonic()
            self._blocks.append((self._seq, duration, clicks))
            self._seq += 1
            self._kept_s += duration
            while len(self._blocks) > 1 and self._kept_s - self._blocks[0][1] >= KEEP_S:
                self._kept_s -= self._blocks.popleft()[1]

    def forget(self, detector: str) -> None:
        """``detector`` disarmed (class docstring): outside an acquisition it forgets the blocks fed until now."""
        with self._lock:
            if self._open == 0:
                self._from_seq[detector] = self._seq

    @contextlib.contextmanager
    def acquisition(self) -> Iterator[None]:
        """An acquisition runs (its blocks are recent however slowly they come); the earlier blocks are forgotten,
        and its own when it ends (class docstring)."""
        with self._lock:
            self._clear()
            self._open += 1
        try:
            yield
        finally:
            with self._lock:
                self._open -= 1
                self._clear()

    def rates(self, period_s: float) -> dict[str, float] | None:
        """Recent click rate [Hz] of each detector with recent blocks (class docstring); None: none recent."""
        with self._lock:
            recent = self._open > 0 or time.monotonic() - self._last_fed <= self.hold_s
            if not recent or not self._blocks:
                return None
            out: dict[str, float] = {}
            for r in self.channels:
                first, duration, clicks = self._from_seq.get(r, 0), 0.0, 0
                for seq, d, c in reversed(self._blocks):
                    if seq < first:
                        break
                    duration += d
                    clicks += c[r]
                    if duration >= period_s:
                        break
                if duration > 0:
                    out[r] = clicks / duration
        return out or None


#: Simulated time [s] of each read-out of :func:`warm_count_source`.
WARM_S = 0.002


def warm_count_source(testbed: SagnacTestbed) -> None:
    """Load (on an empty Numba cache: compile) the simulator kernels a controller's count loop runs with a loop
    behind it (:meth:`~labqfl.sim_backends.testbed.SagnacTestbed.detector_count_rates`), on :data:`WARM_S` of a
    throwaway copy of ``testbed``'s loop, laser on and detectors armed, on both of the simulator's paths (on demand
    and drive patterns: which one a read-out takes depends on the live settings) and through the rule that picks
    the path (:meth:`~labqfl.sim_backends.testbed.SagnacTestbed.candidate_rate`), without emulated pattern
    generators (a read-out plays none). Issue 19: on an empty cache the count loop compiled them on its first
    line, well past the driver's 2 s timeout, and the first ``labqfl acquire`` of
    ``examples/station_emulated_hardware.toml`` failed with "no count line … VI_ERROR_TMO". The rule's kernel was
    missing until CI at cb09aed: a read-out during ``labqfl run --in-process`` compiled it, 3 s under load, and
    the run stopped on the same error (``tests/station/test_count_source_warm.py``)."""
    from labqfl.sim_backends.testbed import SagnacTestbed

    cfg = testbed.config
    cfg = cfg.model_copy(update={"simulation": cfg.simulation.model_copy(update={"emulate_pattern_generators": False})})
    for on_demand in (True, False, None):  # None: as set live, the path rule decides (candidate_rate)
        tb = SagnacTestbed(cfg, threads=testbed.threads)
        tb.modulation_on_demand = on_demand
        tb.detector_count_rates(WARM_S)


class EmulatedDetectors:
    """``simulation.emulate_detectors``: the station's detectors D0/D1 (driver ``SingleQuantumEos``) on
    :class:`WebSQEmulator` controllers started here, one per controller resource of the station file (roles
    on one resource share it, one nanowire each: ``options.channel``), each on free loopback ports.

    ``testbed``: the simulated loop of this process (in process: the Station's), whose detectors follow the
    controllers (module docstring) and whose tagger counts their clicks for the count stream; None (the
    detection node: the loop is the optics node's): the count streams report the tag blocks given to
    :meth:`feed` (:class:`BlockCounts`, blocks recent for ``hold_s`` after the last one outside an
    :meth:`acquisition`), or dark counts at the controller's bias with none recent. Until a driver arms them the
    loop's emulated detectors are off (the controller starts with ``DetectorEnable`` off and every bias at 0 µA),
    as a controller on the bench would be.
    """

    DETECTORS = ("D0", "D1")

    def __init__(self, cfg: StationConfig, testbed: SagnacTestbed | None = None, *, hold_s: float = HOLD_S) -> None:
        self.testbed = testbed
        self.blocks = BlockCounts({r: cfg.time_tagger.detector_channels[r] for r in self.DETECTORS}, hold_s)
        #: role -> (DCR₀ [Hz], I₀, scale) of its dark-count law
        self._dark = {r: (cfg.detectors[r].dark_count_rate_hz, cfg.detectors[r].bias_current_ua,
                          dark_bias_scale(cfg.detectors[r])) for r in self.DETECTORS}
        if testbed is not None:
            warm_count_source(testbed)  # before any controller listens: its first line comes as a real one's would
        groups: dict[str, list[tuple[str, int]]] = {}
        for role in self.DETECTORS:
            ic = cfg.detectors[role]
            if ic.driver != "SingleQuantumEos":
                raise ValueError(f"simulation.emulate_detectors: detector {role} is on driver {ic.driver!r}; "
                                 f"expected \"SingleQuantumEos\"")
            channel = ic.options.get("channel", 1)
            if not isinstance(channel, int) or channel < 1:
                raise ValueError(f"detectors.{role}.options.channel must be an integer >= 1, got {channel!r}")
            groups.setdefault(str(ic.resource).strip().upper(), []).append((role, channel))
        #: role -> (its controller, its channel)
        self.by_role: dict[str, tuple[WebSQEmulator, int]] = {}
        self.emulators: list[WebSQEmulator] = []
        try:
            for roles in groups.values():
                emu = WebSQEmulator(max(ch for _, ch in roles),
                                    counts=self._count_source(roles),
                                    on_change=self._follower(roles) if testbed is not None else self._forgetter(roles),
                                    temperature_k=cfg.detectors[roles[0][0]].temperature_k)
                self.emulators.append(emu)
                for role, ch in roles:
                    self.by_role[role] = (emu, ch)
                if testbed is not None:
                    self._follower(roles)(emu)  # the loop's detectors as the controller starts: off
        except BaseException:
            self.close()
            raise

    # -- the simulated loop follows the controllers ------------------------------------------------
    def _follower(self, roles: list[tuple[str, int]]) -> Callable[[WebSQEmulator], None]:
        def follow(emu: WebSQEmulator) -> None:
            tb = self.testbed
            assert tb is not None
            with emu.lock:
                state = [(role, emu.enabled and not emu.latched[ch - 1], emu.bias_ua[ch - 1]) for role, ch in roles]
            with tb.lock:
                for role, enabled, bias in state:
                    d = tb.live.detectors[role]
                    d.enabled = bool(enabled and bias > 0)  # a latched nanowire clicks no more
                    d.bias = float(bias)
                tb.touch()
        return follow

    def _forgetter(self, roles: list[tuple[str, int]]) -> Callable[[WebSQEmulator], None]:
        """Without a loop: a channel disarmed (``DetectorEnable`` off or bias ≤ 0 µA) forgets the blocks fed until
        then (:meth:`BlockCounts.forget`), as a nanowire without bias saw none of that light."""
        def forget(emu: WebSQEmulator) -> None:
            with emu.lock:
                disarmed = [role for role, ch in roles if not emu.enabled or emu.bias_ua[ch - 1] <= 0]
            for role in disarmed:
                self.blocks.forget(role)
        return forget

    def _count_source(self, roles: list[tuple[str, int]]) -> CountSource:
        rng = np.random.default_rng()  # used by this controller's count loop only

        def counts(period_s: float) -> list[int] | None:
            if self.testbed is None:
                return self._block_counts(roles, period_s, rng)  # no light here: the blocks the node slots
            rates = self.testbed.detector_count_rates(period_s)
            out = [0] * max(ch for _, ch in roles)
            for role, ch in roles:
                out[ch - 1] = round(rates[role] * period_s)
            return out
        return counts

    def _block_counts(self, roles: list[tuple[str, int]], period_s: float,
                      rng: np.random.Generator) -> list[int] | None:
        """One count line without a loop (module docstring): 0 on a disabled channel; the recent blocks' click
        rate × ``period_s``, rounded; with no recent blocks, dark counts at the bias, Poisson-drawn."""
        if roles[0][0] not in self.by_role:
            return None  # still starting
        emu = self.by_role[roles[0][0]][0]
        with emu.lock:
            enabled, bias = emu.enabled, list(emu.bias_ua)
        rates = self.blocks.rates(period_s)
        out = [0] * len(bias)
        for role, ch in roles:
            if not enabled or bias[ch - 1] <= 0:
                continue
            if rates is not None and role in rates:
                out[ch - 1] = round(rates[role] * period_s)
            else:
                dcr0, bias0, scale = self._dark[role]
                out[ch - 1] = int(rng.poisson(dark_count_rate_at(dcr0, bias[ch - 1], bias0, scale) * period_s))
        return out

    def feed(self, block: TagBlock) -> None:
        """Count a tag block the detection node slots (:meth:`BlockCounts.feed`)."""
        self.blocks.feed(block)

    def acquisition(self) -> contextlib.AbstractContextManager[None]:
        """While an acquisition runs (:meth:`BlockCounts.acquisition`)."""
        return self.blocks.acquisition()

    # -- what the driver is pointed at -----------------------------------------------------------
    def instrument_config(self, role: str, ic: InstrumentConfig) -> InstrumentConfig:
        """Detector ``role``'s config pointed at its emulated controller: the control port as a VISA socket
        through pyvisa-py (``@py``) and ``options.counts_port``, instead of the resource's."""
        if role not in self.by_role:
            raise ValueError(f"no emulated detector {role!r}; emulated are {sorted(self.by_role)}")
        emu, _ = self.by_role[role]
        return ic.model_copy(update={"resource": emu.resource, "visa_library": "@py",
                                     "options": {**ic.options, "counts_port": emu.counts_port}})

    def station_config(self, cfg: StationConfig) -> StationConfig:
        """``cfg`` with its detectors pointed at the emulated controllers (:meth:`instrument_config`)."""
        dets = {r: self.instrument_config(r, ic) if r in self.by_role else ic for r, ic in cfg.detectors.items()}
        return cfg.model_copy(update={"detectors": dets})

    def close(self) -> None:
        for emu in self.emulators:
            emu.close()


__all__ = ["BIAS_LIMIT_UA", "HOLD_S", "KEEP_S", "MIN_PERIOD_MS", "WARM_S", "BlockCounts", "EmulatedDetectors",
           "WebSQEmulator", "warm_count_source"]
