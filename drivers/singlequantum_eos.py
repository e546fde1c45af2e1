"""Single Quantum Eos SNSPD system (superconducting nanowire detectors, 1550 nm) over its WebSQ TCP interface.

**Where the command set comes from.** Single Quantum publishes its own Python client,
``WebSQControl.py`` (MIT licence, "Copyright (c) 2020 Single Quantum B. V. and Andreas Fognini",
"Python control class for the SNSNPD atlas driver. It implements many functions that can be found
in the SNSPD manual"; redistributed unchanged in QCoDeS' ``qcodes_contrib_drivers`` and by labs as
"FilesFromManufacturer"). Every string below is taken from it; "[W …]" names the method.

* Transport: TCP, control port 12000 [W ``WebSQControl.__init__``] and a counts port 12345. The
  client sends JSON objects with no delimiter; the controller answers with JSON objects each ended
  by ``\\x17`` (ETB), several of them possibly in one read [W ``SQTalk.run``, ``sub_jsons``].
* ``{"request": "labelProps", "value": "None"}`` → one ``{"label": L, "value": {"value": v, …}}`` per
  label [W ``SQTalk.get_label``, ``add_labelProps``]. Labels used here: ``NumberOfDetectors``,
  ``BiasCurrent`` (µA, one per channel), ``TriggerLevel`` (mV), ``DetectorEnable``,
  ``InptMeasurementPeriod`` (ms).
* ``{"command": "SetAllBiasCurrents", "label": "BiasCurrent", "value": [µA, …]}``
  [W ``set_bias_current``]; ``{"command": "SetAllTriggerLevels", "label": "TriggerLevel",
  "value": [mV, …]}`` [W ``set_trigger_level``]; ``{"command": "DetectorEnable", "label":
  "DetectorEnable", "value": true|false}`` ("Enables the bias current to the SNSPDs",
  [W ``enable_detectors``]); ``{"command": "SetMeasurementPeriod", "label":
  "InptMeasurementPeriod", "value": ms}`` ("the minimum value can be 10 ms",
  [W ``set_measurement_periode``]).
* Errors: any message whose label contains ``Error`` [W ``SQTalk.check_error``].
* ``{"request": "TemperatureHistory"}`` → label ``temperature_long_memory`` with ``T`` = the cold
  stage (~2.5 K) history [W ``get_cryo_temperature``].
* Counts port: one line ``<time>,<counts ch1>,…`` per measurement period [W ``SQCounts.run``].
* Bias currents within ±90.9 µA [W ``iv_scan_setup``: "(-90.9 < I < 90.9)"].

The resource is the control port as a VISA socket, ``TCPIP0::<host>::12000::SOCKET`` (pyvisa-py
``@py`` or any VISA with socket support); ``options.counts_port`` names the counts port.
The protocol-level emulator :class:`labqfl.sim_backends.websq.WebSQEmulator` speaks the same.

**labqfl's use.** One role per nanowire: ``options.channel`` (1-based), so D0 and D1 on one
controller share one session (the station allows several roles on one resource, one channel each).
Every setting is confirmed by reading the label back (the controller's answer replaces an error
queue). ``bias`` is the operating bias current [µA] (station file: ``bias_current_ua``). Arming
(``enabled = True``) switches ``DetectorEnable`` on and ramps this channel's bias up from 0 µA in
steps of at most ``options.bias_step_ua`` at ``options.bias_ramp_ua_per_s``; disarming and the safe
state (also on SIGTERM/SIGINT through the Station) ramp it down to 0 µA and switch
``DetectorEnable`` off once every channel is at 0 µA. An SNSPD is free-running (``gated`` is
False) and its dead time and efficiency are properties of the nanowire and its readout, not
settings of this interface: they are the station file's nominal values. On open the operating
point is written: the trigger level (``options.trigger_level_mv``, if given) and this channel at
0 µA until armed.

**Latching** (review s36 M3). A nanowire biased too close to its switching current, or hit by a bright
pulse, latches: it stays resistive, biased but counting nothing, until its bias is taken away. After
arming, and whenever :meth:`count_rate_hz` reads no count at the operating bias (the station file's
``bias_current_ua``) or above, the channel's counts are read from the counts port ([W ``SQCounts.run``],
period set with ``SetMeasurementPeriod`` [W ``set_measurement_periode``]). It is latched when it counts
**nothing** over a screening window W and then nothing over a confirmation window C: its bias is ramped to
0 µA and back once (``SetAllBiasCurrents`` [W ``set_bias_current``], each step confirmed, with the light
taken off meanwhile: :attr:`PhotonDetector.light_off`), and if it again counts nothing over W and C the bias
is ramped to 0 µA and the channel refused in one line naming it. ``options.latch_check = false`` turns this
off (a controller whose counts port cannot be reached).

*Windows and false alarms* (review s36 lab2 L1). The check runs in the dark at arming (the detectors are
biased before the light is on), where a working channel counts only its dark counts, a Poisson process of
rate r. r_min = ``options.latch_threshold_hz`` (default: the station file's ``dark_count_rate_hz`` / 10) is
the lowest dark rate a working channel is assumed to have: the station file's nominal value may be off by
that factor (its own comment gives SNSPDs 10–100 /s). W = 1/r_min (``options.latch_window_s``; within
0.1 … 10 s) and C = ln(1/P) / r_min − W with P = :data:`LATCH_FALSE_ALARM` = 10⁻⁴ (within 0.1 … 10 s). A
working channel of rate r counts nothing over W + C with probability

    P_false(r) = exp(−r·(W + C)),

so P_false(r_min) = 10⁻⁴ while neither window is clamped, and less for any r > r_min; a refusal needs that
twice (before and after the reset), P_false². Example: nominal 50 /s, r_min = 5 /s: W = 0.2 s, C = 1.64 s;
a channel at 5 /s (0.1× nominal) is reset with P = 10⁻⁴ and refused with 10⁻⁸ (before, with one 0.2 s
window: 0.37 and 0.14). C is read only after W counted nothing, so a working channel at its nominal rate
costs W (and C with probability e⁻¹⁰). A latched nanowire counts nothing, so it is always found. When C is
clamped at 10 s (r_min below ≈ 0.92 /s, a nominal dark rate below ≈ 9.2 /s), P_false(r_min) =
exp(−r_min·(W + C)) is larger: 2.5·10⁻³ at r_min = 0.5 /s, 0.05 at 0.2 /s, 0.135 at 0.1 /s;
:meth:`latch_false_alarm` gives it for any r and the driver warns at open (review s37 lab3 L2). The
end-of-acquisition check (:meth:`acquisition_fault`) resets nothing, so a channel that counts nothing there is
read a second time (W + C again) before it is called latched: P_false² there too (0.018 at r_min = 0.1 /s),
and the channels that clicked in the acquisition's last block are not read at all
(:func:`labqfl.station.acquisition_faults`). The "dark" assumption is the safe side: with light on, r is
larger and P_false smaller.

*Emergency stop during a window* (issue 19). The windows (up to 2 × 10 s each, twice at the end check) hold only
the controller's window lock (:data:`_WINDOW_LOCKS`: one measurement period and one counts port per controller),
never the driver's lock: the safe state (bias down) needs that one, and an emergency stop runs the safe states in
the station's reverse opening order, the detectors before the laser, so a window holding it kept the laser on until
it ended. The driver's lock is taken only to set the period. Arming's check too runs after the ``enabled``
setting's write has let go of the driver's lock (:meth:`SingleQuantumEos.setting_changed`; before, it ran inside
that write and an emergency waited for the window's next count line, up to 10 s). A window checks :func:`labqfl.instruments.base.in_emergency` before it starts and at each count line, and an
emergency met there ends it with an :class:`InstrumentError` ("latch check cut by the emergency stop … no verdict on a latch"); a bias
written during the windows (a safe state, a disarm from another thread) gives no verdict either, never "latched".
"""

from __future__ import annotations

import json
import math
import threading
from typing import Any, cast

import pyvisa
from pydantic import Field
from pymeasure.adapters import Adapter
from pyvisa.resources import MessageBasedResource

from labqfl.config import DriverOptions, InstrumentConfig, StationConfig
from labqfl.errors import InstrumentError, InstrumentQueueError, InstrumentReplyError
from labqfl.instruments.base import in_emergency
from labqfl.instruments.interfaces import PhotonDetector
from labqfl.instruments.settings import Setting, in_range

from ._base import FreeRunning, Limit, MessageDriver, check_range, off_anyway, ramp_points, run_ramp
from ._link import _registry_key

BIAS_UA = (0.0, 90.9)
TRIGGER_LEVEL_MV = (-1000.0, 1000.0)
MAX_CHANNELS = 8
MIN_PERIOD_MS = 10
MAX_PERIOD_MS = 10_000  # labqfl's own limit for one count-rate window
ETB = "\x17"
#: Probability that a working channel at the lowest dark rate assumed counts nothing over the latch check's
#: two windows (module docstring, "Windows and false alarms").
LATCH_FALSE_ALARM = 1e-4

#: One lock per controller (its control resource) for the counting windows: the measurement period and the counts
#: port are the controller's, so two windows never overlap, but a window holds only this one, never the driver's
#: lock that the safe state needs (issue 19).
_WINDOW_LOCKS: dict[str, threading.RLock] = {}
_WINDOW_LOCKS_LOCK = threading.Lock()


class SingleQuantumEosOptions(DriverOptions):
    """``options`` of a :class:`SingleQuantumEos` role."""

    channel: int = Field(1, ge=1, le=MAX_CHANNELS, description="detector channel (nanowire) of this role, 1-based")
    counts_port: int = Field(12345, ge=1, le=65535, description="TCP port of the controller's count stream")
    trigger_level_mv: float | None = Field(None, ge=TRIGGER_LEVEL_MV[0], le=TRIGGER_LEVEL_MV[1],
                                           description="counter trigger level written on open [mV] (None: keep)")
    bias_ramp_ua_per_s: float = Field(10.0, gt=0.0, le=10_000.0, description="average bias ramp rate [µA/s]")
    bias_step_ua: float = Field(0.5, gt=0.0, le=BIAS_UA[1], description="largest bias step of a ramp [µA]")
    latch_check: bool = Field(True, description="check for a latched nanowire after arming and when counts are read "
                              "at the operating bias (False: a controller whose counts port cannot be reached)")
    latch_threshold_hz: float | None = Field(None, gt=0.0, description="lowest dark-count rate a working channel "
                                             "has [Hz]: it sizes the latch check's windows (None: the station file's "
                                             "dark_count_rate_hz / 10)")
    latch_window_s: float | None = Field(None, ge=MIN_PERIOD_MS / 1e3, le=MAX_PERIOD_MS / 1e3,
                                         description="screening window of the latch check [s] (None: 1 / "
                                         "latch_threshold_hz, within 0.1 ... 10 s)")


class SingleQuantumEos(FreeRunning, MessageDriver, PhotonDetector):
    """One nanowire of a Single Quantum SNSPD system as a :class:`PhotonDetector` (WebSQ protocol)."""

    free_running_name = "an SNSPD"

    READ_TERMINATION = ETB
    WRITE_TERMINATION = ""
    ERROR_QUERY = None
    Options = SingleQuantumEosOptions
    CHANNELS = tuple(range(1, MAX_CHANNELS + 1))
    # no SPECTRAL_RANGE_NM: each nanowire is optimised for one band, stated on its test sheet, not here

    max_bias = BIAS_UA[1]
    bias_unit = "µA"
    #: bias writes so far: a counting window over which it changed counted at another bias (:meth:`_counts_nothing`)
    _bias_writes = 0

    @classmethod
    def config_limits(cls, options: Any) -> dict[str, Limit]:
        return {"bias_current_ua": cls.bias.limits(cls)}

    def __init__(self, name: str, config: InstrumentConfig, *, adapter: Adapter | None = None) -> None:
        o = self.parse_options(name, config)
        self.channel = o.channel
        self.bias_ramp_ua_per_s, self.bias_step_ua = o.bias_ramp_ua_per_s, o.bias_step_ua
        self.name = name  # for the setting's error before the session opens
        self._bias_setpoint = SingleQuantumEos.bias.validate(self, getattr(config, "bias_current_ua", 0.0))
        self._operating_bias = self._bias_setpoint  # the station file's bias: the latch check's reference
        self._dark_hz = float(getattr(config, "dark_count_rate_hz", 50.0))
        self._nominal = {"efficiency": float(getattr(config, "efficiency", 0.8)),
                         "dead_time_ns": float(getattr(config, "dead_time_ns", 30.0))}
        self.n_detectors = 0
        self._dump_size: int | None = None
        self._pending: list[dict[str, Any]] = []
        #: threads whose ``enabled = True`` write owes arming's latch check (:meth:`setting_changed`), with the
        #: bias-write count at the end of that write: the check's baseline (review s39 LAB1)
        self._latch_check_due: dict[int, int] = {}
        super().__init__(name, config, adapter=adapter)
        self._warn_clamped_windows()

    def _warn_clamped_windows(self) -> None:
        """A warning when a latch window is clamped at 10 s (r_min below ≈ 0.92 /s): a working channel at r_min
        is then taken for latched with more than :data:`LATCH_FALSE_ALARM` (review s37 lab3 L2)."""
        params = self._latch_params()
        if params is None:
            return
        r_min, window, confirm = params
        p = self.latch_false_alarm(r_min)
        if p > LATCH_FALSE_ALARM * 1.01:
            self.log.warning("latch check windows clamped (W %g s + C %g s, at most %g s each): a working channel of "
                             "%g dark counts/s (options.latch_threshold_hz) is reset as latched with probability %.2g, "
                             "refused at arming with %.2g and at an acquisition's end with %.2g (not %g); raise "
                             "options.latch_threshold_hz if its channel counts more, or check it with the light on",
                             window, confirm, MAX_PERIOD_MS / 1e3, r_min, p, p * p, p * p, LATCH_FALSE_ALARM)

    # -- wire protocol ------------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        text = json.dumps(message)
        self.link.call(text, lambda: self.link._adapter(text).write(text))

    def _read_messages(self, command: str) -> list[dict[str, Any]]:
        """One read (up to ``\x17``): the JSON objects in it."""
        raw = str(self.link.call(command, lambda: self.link._adapter(command).read())).strip().strip(ETB)
        if raw:
            self.link.heard = True
        decoder, out, pos = json.JSONDecoder(), [], 0
        while pos < len(raw):
            try:
                obj, end = decoder.raw_decode(raw, pos)
            except json.JSONDecodeError:
                raise InstrumentReplyError(f"reply {raw[:80]!r} is not JSON; expected WebSQ label messages",
                                           instrument=self.name, resource=self.resource, command=command) from None
            pos = end
            while pos < len(raw) and raw[pos] in " \r\n" + ETB:
                pos += 1
            if isinstance(obj, dict):
                out.append(obj)
        return out

    @staticmethod
    def _is_prop(m: dict[str, Any]) -> bool:
        """A ``labelProps`` entry (its value is the label's property dict), not a broadcast."""
        return isinstance(m.get("value"), dict) and "value" in m["value"] and "label" in m

    def _learn_dump_size(self) -> None:
        """Count the entries of one ``labelProps`` answer, so every later request reads exactly one.

        ``NumberOfDetectors`` occurs once per answer: read the first answer up to it, ask again, and
        count the entries up to its next occurrence (the rest of the first answer plus the start of
        the second: one answer less one entry); then read the rest of the second answer.
        """
        self._send({"request": "labelProps", "value": "None"})
        before = self._read_props_until("NumberOfDetectors")
        self._send({"request": "labelProps", "value": "None"})
        between = self._read_props_until("NumberOfDetectors")
        self._dump_size = between + 1
        self._read_props(self._dump_size - before - 1)

    def _next(self, command: str) -> dict[str, Any]:
        """The next message from the controller (several may arrive in one read)."""
        while not self._pending:
            self._pending.extend(self._read_messages(command))
        return self._pending.pop(0)

    def _read_props_until(self, label: str) -> int:
        """Read ``labelProps`` entries up to and including ``label``; return how many came before it."""
        n = 0
        while True:
            m = self._next("labelProps")
            if self._is_prop(m):
                if m["label"] == label:
                    return n
                n += 1

    def _read_props(self, count: int) -> dict[str, Any]:
        """Read exactly ``count`` ``labelProps`` entries (and the broadcasts on the way); an ``Error``
        label read meanwhile raises once the entries are all in."""
        got: dict[str, Any] = {}
        errors: list[str] = []
        n = 0
        while n < count:
            m = self._next("labelProps")
            if "Error" in str(m.get("label", "")):
                errors.append(repr(m.get("value")))
            elif self._is_prop(m):
                got[m["label"]] = m["value"]["value"]
                n += 1
        # what came in the same read after the answer: broadcasts (dropped) or errors (reported)
        errors += [repr(m.get("value")) for m in self._pending if "Error" in str(m.get("label", ""))]
        self._pending.clear()
        if errors:
            raise InstrumentQueueError(f"controller reported {'; '.join(errors)}", instrument=self.name,
                                       resource=self.resource, command="labelProps")
        return got

    def _labels(self, *wanted: str) -> dict[str, Any]:
        """Current values of ``wanted`` labels: one ``labelProps`` request, its whole answer read."""
        with self.lock:
            if self._dump_size is None:
                self._learn_dump_size()
            assert self._dump_size is not None
            self._send({"request": "labelProps", "value": "None"})
            got = self._read_props(self._dump_size)
            missing = [w for w in wanted if w not in got]
            if missing:
                raise InstrumentReplyError(f"the controller's labelProps lack {missing}; expected them all",
                                           instrument=self.name, resource=self.resource, command="labelProps")
            for label in wanted:
                self._check_label(label, got[label])
            return got

    #: Labels holding one number per channel, and the range each number must lie in.
    _PER_CHANNEL = {"BiasCurrent": (-BIAS_UA[1], BIAS_UA[1], "µA"), "TriggerLevel": (*TRIGGER_LEVEL_MV, "mV")}

    def _check_label(self, label: str, value: Any) -> None:
        """Refuse a label value of the wrong shape: ``DetectorEnable`` a JSON boolean; ``BiasCurrent`` /
        ``TriggerLevel`` a list of ``n_detectors`` numbers within the controller's range."""
        def bad(expected: str) -> InstrumentReplyError:
            return InstrumentReplyError(f"unexpected {label} = {value!r}; expected {expected}", instrument=self.name,
                                        resource=self.resource, command="labelProps")
        if label == "DetectorEnable" and not isinstance(value, bool):
            raise bad("a JSON boolean (true or false)")
        if label in self._PER_CHANNEL:
            lo, hi, unit = self._PER_CHANNEL[label]
            n = self.n_detectors
            shape = f"a list of {n} numbers (one per detector)" if n else "a list of numbers (one per detector)"
            if not isinstance(value, list) or (n and len(value) != n):
                raise bad(shape)
            for x in value:
                if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
                    raise bad(shape)
                if not lo - 1e-9 <= x <= hi + 1e-9:
                    raise bad(f"{shape} within {lo:g} … {hi:g} {unit}")

    def _command(self, command: str, label: str, value: Any) -> None:
        """Send a command and confirm the controller now holds ``value`` under ``label``."""
        with self.lock:
            self._send({"command": command, "label": label, "value": value})
            now = self._labels(label)[label]
            same = (now == value if not isinstance(value, list)
                    else isinstance(now, list) and len(now) == len(value)
                    and all(abs(float(a) - float(b)) < 1e-6 for a, b in zip(now, value, strict=True)))
            if not same:
                raise InstrumentReplyError(f"controller kept {label} = {now!r}; expected {value!r}",
                                           instrument=self.name, resource=self.resource, command=command)

    def _on_open(self) -> None:
        self._pending.clear()
        n = self._labels("NumberOfDetectors")["NumberOfDetectors"]
        if not isinstance(n, int) or n < 1:
            raise InstrumentReplyError(f"unexpected NumberOfDetectors {n!r}; expected an integer >= 1",
                                       instrument=self.name, resource=self.resource, command="labelProps")
        if self.channel > n:
            raise InstrumentError(f"options.channel = {self.channel}, but the controller has {n} detectors; "
                                  f"expected 1 to {n}", instrument=self.name, resource=self.resource)
        self.n_detectors = n
        self._identity = f"Single Quantum,WebSQ SNSPD controller,{n} detectors,channel {self.channel}"

    def identity(self) -> str:
        return self._identity or ""

    # -- bias ---------------------------------------------------------------------------------------
    @property
    def bias_currents_ua(self) -> list[float]:
        """Bias current of every channel now [µA]."""
        return [float(x) for x in self._labels("BiasCurrent")["BiasCurrent"]]

    @property
    def bias_now_ua(self) -> float:
        """This channel's bias current now [µA]."""
        return self.bias_currents_ua[self.channel - 1]

    def _write_bias(self, ua: float) -> None:
        with self.lock:
            self._bias_writes += 1
            currents = self.bias_currents_ua
            currents[self.channel - 1] = round(ua, 4)
            self._command("SetAllBiasCurrents", "BiasCurrent", currents)

    def _ramp_bias(self, target_ua: float) -> None:
        """This channel's bias to ``target_ua`` in steps of at most ``bias_step_ua`` at ``bias_ramp_ua_per_s``. A
        ramp away from 0 µA (arming: up to 9 s from 0 to 90 µA at the default rate, under the driver's lock the
        safe state needs) stops at the next step once an emergency stop runs, and raises; a ramp towards 0 µA (a
        safe state, a disarm) always runs all the way (issue 19)."""
        with self.lock:
            i0 = self.bias_now_ua
            if abs(i0 - target_ua) < 1e-6:
                return
            if i0 * target_ua < 0:  # crosses 0 µA (a negative bias read back): down to 0, never cut, then away
                self._ramp_bias(0.0)  # from it, cut in an emergency (review s39 LAB5)
                i0 = 0.0
            points = ramp_points(i0, target_ua, self.bias_step_ua)
            why: list[str] = []

            def cut() -> bool:
                reason = in_emergency()
                if reason is not None:
                    why.append(reason)
                return reason is not None

            done = run_ramp(points, self.bias_ramp_ua_per_s, self.bias_step_ua, self._write_bias,
                            cut=cut if abs(target_ua) > abs(i0) else None)
            if done < len(points):
                reached = points[done - 1] if done else i0
                raise InstrumentError(f"{self.name}: channel {self.channel}: bias ramp to {target_ua:g} µA cut by the "
                                      f"emergency stop ({why[-1]}) at {reached:g} µA", instrument=self.name,
                                      resource=self.resource, command="SetAllBiasCurrents")

    def _get_enabled(self) -> bool:
        """Armed: ``DetectorEnable`` on (a JSON ``true``) and this channel biased."""
        with self.lock:
            return self._labels("DetectorEnable")["DetectorEnable"] is True and self.bias_now_ua > 0

    def _set_enabled(self, on: bool) -> None:
        """Runs inside the ``enabled`` setting's write, which holds the driver's lock
        (:class:`~labqfl.instruments.settings.Setting`): the bias supply and the ramp here; arming's latch check
        after the write, once that lock is let go (:meth:`setting_changed`)."""
        me = threading.get_ident()
        self._latch_check_due.pop(me, None)
        if on:
            reason = in_emergency()  # before the first write: nothing switched on once an emergency began (LAB5)
            if reason is not None:
                raise InstrumentError(f"{self.name}: channel {self.channel}: not armed: the emergency stop "
                                      f"({reason}) runs; bias supply left as it was", instrument=self.name,
                                      resource=self.resource, command="DetectorEnable")
            if not self._labels("DetectorEnable")["DetectorEnable"]:
                self._command("DetectorEnable", "DetectorEnable", True)
            self._ramp_bias(self._bias_setpoint)
            if self._latch_params() is not None and self._bias_setpoint >= self._operating_bias - 1e-6:
                self._latch_check_due[me] = self._bias_writes  # the baseline, taken at the write under its lock
        else:
            with self.lock:
                self._disarm()

    def setting_changed(self, name: str) -> None:
        """After a setting's write, outside the lock the write held: arming's latch check (after ``enabled =
        True`` in this thread), then the change hooks (:meth:`Instrument.setting_changed`; not told of an arming
        the check refused, as before). The check's windows hold only the controller's window lock: an emergency's
        safe state (this channel's bias down, then the laser off) runs at once, and the window ends at its next
        count line with "latch check cut by the emergency stop … no verdict" (issue 19; before, it waited for
        that line with the driver's lock held, up to one count period of 10 s). A caller that itself holds the
        driver's lock around the write still holds it here."""
        me = threading.get_ident()
        if name == "enabled" and me in self._latch_check_due:
            writes = self._latch_check_due.pop(me)
            with self._window:  # not self.lock: the safe state needs it
                if self._bias_writes != writes:  # a safe state / disarm / stop since the write: bias not at its
                    raise self._bias_moved(0.0, "between arming's write and its latch check")  # point (LAB1)
                self._latch_check_keeping_period(writes)
        super().setting_changed(name)

    def _disarm(self) -> None:
        """This channel ramped to 0 µA; ``DetectorEnable`` off once every channel is at 0 µA. If a read or
        write on the way fails, ``DetectorEnable`` is switched off at once (it removes the bias of every
        nanowire of the controller) and the first failure is raised after that."""
        state = {"failed": True, "all_zero": False}

        def approach() -> None:
            self._ramp_bias(0.0)
            state["all_zero"] = all(abs(b) < 1e-9 for b in self.bias_currents_ua)
            state["failed"] = False

        def off() -> None:
            if state["failed"] or state["all_zero"]:
                self._command("DetectorEnable", "DetectorEnable", False)

        off_anyway(self, approach, off, "the bias supply (DetectorEnable false)")

    enabled = PhotonDetector.enabled.via(_get_enabled, _set_enabled)

    def _get_bias(self) -> float:
        """Operating bias current [µA], applied (ramped) while armed."""
        return self._bias_setpoint

    def _set_bias(self, v: float) -> None:
        self._bias_setpoint = v
        if self.enabled:
            self._ramp_bias(v)

    bias = PhotonDetector.bias.via(_get_bias, _set_bias)

    def _get_trigger_level_mv(self) -> float:
        return float(self._labels("TriggerLevel")["TriggerLevel"][self.channel - 1])

    def _set_trigger_level_mv(self, v: float) -> None:
        levels = [float(x) for x in self._labels("TriggerLevel")["TriggerLevel"]]
        levels[self.channel - 1] = v
        self._command("SetAllTriggerLevels", "TriggerLevel", levels)

    trigger_level_mv = Setting[float](
        "mV", "counter trigger level of this channel", validator=in_range(*TRIGGER_LEVEL_MV, "mV"),
    ).via(_get_trigger_level_mv, _set_trigger_level_mv)

    # -- nominal values of the station file (properties of the nanowire, not set on the controller) ----------
    efficiency = PhotonDetector.efficiency.refine(fget=lambda s: s._nominal["efficiency"],
                                                  fset=lambda s, v: s._nominal.__setitem__("efficiency", v))
    dead_time_ns = PhotonDetector.dead_time_ns.refine(fget=lambda s: s._nominal["dead_time_ns"],
                                                      fset=lambda s, v: s._nominal.__setitem__("dead_time_ns", v))

    @PhotonDetector.temperature_k.getter
    def temperature_k(self) -> float:
        """Cold-stage temperature [K] (last entry of ``temperature_long_memory.T``)."""
        with self.lock:
            self._send({"request": "TemperatureHistory"})
            while True:
                m = self._next("TemperatureHistory")
                if "Error" in str(m.get("label", "")):
                    raise InstrumentQueueError(f"controller reported {m.get('value')!r}", instrument=self.name,
                                               resource=self.resource, command="TemperatureHistory")
                v = m.get("value")
                if m.get("label") == "temperature_long_memory" and isinstance(v, dict) and v.get("T"):
                    self._pending.clear()
                    t = v["T"]
                    return self.link.number("TemperatureHistory", t[-1] if isinstance(t, list) else t, 0.0, 400.0, "K")

    # -- station hooks --------------------------------------------------------------------------------
    def apply_operating_point(self, station: StationConfig) -> None:
        """Trigger level (if given in the options); this channel at 0 µA until armed."""
        with self.lock:
            if self.opts.trigger_level_mv is not None:
                self.trigger_level_mv = self.opts.trigger_level_mv
            if not self.enabled:
                self._ramp_bias(0.0)

    def safe_state(self) -> None:
        """This channel's bias ramped down to 0 µA; bias supply off once every channel is at 0 µA."""
        self.enabled = False

    # -- latching ---------------------------------------------------------------------------------
    def _latch_params(self) -> tuple[float, float, float] | None:
        """(r_min [Hz], screening window W [s], confirmation window C [s]) of the latch check (module docstring,
        "Windows and false alarms"); None: no check (off, or no dark rate to refer to)."""
        o = self.opts
        if not o.latch_check:
            return None
        r_min = o.latch_threshold_hz if o.latch_threshold_hz is not None else self._dark_hz / 10.0
        if r_min <= 0:
            return None
        lo, hi = MIN_PERIOD_MS / 1e3 * 10, MAX_PERIOD_MS / 1e3
        window = o.latch_window_s if o.latch_window_s is not None else min(hi, max(lo, 1.0 / r_min))
        confirm = min(hi, max(lo, math.log(1.0 / LATCH_FALSE_ALARM) / r_min - window))
        return r_min, window, confirm

    def latch_false_alarm(self, rate_hz: float) -> float:
        """Probability that a working channel of dark rate ``rate_hz`` is taken for latched (no count over
        both windows): exp(−rate·(W + C)); 0 when there is no check."""
        params = self._latch_params()
        if params is None:
            return 0.0
        _, window, confirm = params
        return math.exp(-rate_hz * (window + confirm))

    def _counts_nothing(self, first_rate: float | None = None) -> tuple[bool, float]:
        """(latched, seconds counted): no count over the screening window (``first_rate``: a rate just read over
        it), then none over the confirmation window."""
        params = self._latch_params()
        assert params is not None
        _, window, confirm = params
        writes = self._bias_writes
        rate = self._read_rate(window) if first_rate is None else first_rate
        if rate * window >= 0.5:  # at least one count
            return False, window
        nothing = self._read_rate(confirm) * confirm < 0.5
        if self._bias_writes != writes:  # the windows hold no driver lock: another thread may have moved it
            raise self._bias_moved(window + confirm)
        return nothing, window + confirm

    def _bias_moved(self, seconds: float, when: str = "") -> InstrumentError:
        """The latch check's error when the bias was written during it by another caller (a safe state, a stop, a
        disarm). ``when``: where it was seen, if not during the counting windows of ``seconds``."""
        when = when or f"during its counting windows ({seconds:.3g} s)"
        return InstrumentError(f"{self.name}: channel {self.channel}: latch check cut: the bias was changed {when} "
                               "by another caller (a safe state, a stop, a disarm); no verdict on a latch",
                               instrument=self.name, resource=self.resource, command="counts")

    def _latch_check_keeping_period(self, writes: int) -> None:
        """:meth:`_recover_if_latched` after arming (``writes``: the bias-write count at arming's write), with the
        controller's measurement period (what its count stream reports per line, to every listener) put back as
        it was."""
        self._keeping_period(lambda: self._recover_if_latched(None, writes))

    def acquisition_fault(self) -> str | None:
        """After an acquisition (:func:`labqfl.station.acquisition_faults`, review s36 lab H1): why this armed
        channel's tags are not good, or None. A channel at its operating bias that counts nothing over the latch
        check's windows latched during the acquisition (a latched nanowire counts nothing until its bias is
        taken away). Read only: nothing is reset (the recording is refused instead); the light is still on."""
        params = self._latch_params()
        if params is None:
            return None
        with self._window:  # not self.lock: an emergency's safe state runs during the windows (issue 19)
            bias = self.bias_now_ua
            if bias < self._operating_bias - 1e-6:
                return None  # not at its operating point: arming_settings' read-back names it
            latched, seconds = self._keeping_period(self._end_counts_nothing)
        if not latched:
            return None
        return (f"channel {self.channel} counted nothing over {seconds:.3g} s at {bias:g} µA: latched during the "
                f"acquisition (a working channel of {params[0]:g} counts/s, options.latch_threshold_hz, counts none "
                f"over that time with probability {self.latch_false_alarm(params[0]) ** 2:.1e})")

    def _end_counts_nothing(self) -> tuple[bool, float]:
        """The end check's :meth:`_counts_nothing`, read a second time when the first one counted nothing (it
        resets nothing, so it has no second chance after a reset as arming has): a working channel is taken
        for latched with probability :meth:`latch_false_alarm` squared, which matters where the windows are
        clamped (r_min below 0.92 /s: 0.135 once, 0.018 twice at r_min = 0.1 /s; review s37 lab3 L2). A latched
        channel counts nothing either time."""
        latched, seconds = self._counts_nothing()
        if not latched:
            return False, seconds
        self.log.info("channel %d counted nothing over %.3g s at the end of the acquisition: read once more",
                      self.channel, seconds)
        again, more = self._counts_nothing()
        return again, seconds + more

    def _keeping_period(self, read: Any) -> Any:
        """``read()`` with the controller's measurement period put back as it was afterwards."""
        period = self._labels("InptMeasurementPeriod")["InptMeasurementPeriod"]
        try:
            return read()
        finally:
            if isinstance(period, int) and not isinstance(period, bool) and period >= MIN_PERIOD_MS:
                try:
                    self._command("SetMeasurementPeriod", "InptMeasurementPeriod", period)
                except Exception as exc:  # the check's own result (or refusal) matters more
                    self.log.warning("measurement period not put back to %d ms: %s", period, exc)

    def _recover_if_latched(self, rate: float | None, since: int | None = None) -> None:
        """A biased nanowire that counts nothing over the screening and confirmation windows is latched (a real
        one stays resistive, counting nothing, until its bias is taken away): its bias is ramped to 0 µA and back
        once (``SetAllBiasCurrents`` [W ``set_bias_current``], each step confirmed), the light off meanwhile;
        still counting nothing, the bias is ramped to 0 µA and the channel refused in one line. ``rate``: a rate
        just read over the screening window. The reset holds the driver's lock (a few ramp steps, no window) and
        starts only if no emergency runs and no one wrote the bias since the check began: a safe state that ran
        between the windows and the reset is never undone by the ramp back up (issue 19). ``since``: the bias-write
        count when the bias was put at its operating point (arming's write: a stop's safe state in between gives no
        verdict, review s39 LAB1); default: the count now."""
        writes = self._bias_writes if since is None else since
        latched, seconds = self._counts_nothing(rate)  # a write since ``writes`` is seen below: no verdict
        if not latched:
            return
        with self.lock:
            self._not_in_emergency(seconds)
            if self._bias_writes != writes:
                raise self._bias_moved(seconds)
            bias = self.bias_now_ua
            self.log.warning("channel %d counted nothing over %.3g s at %g µA: latched; bias ramped to 0 µA and back "
                             "once", self.channel, seconds, bias)
            restore = self.light_off() if self.light_off is not None else None  # the station's shutters/clock
            try:
                self._ramp_bias(0.0)
                self._ramp_bias(bias)  # back up in the dark, not under the flux that latched it
            finally:
                if restore is not None and in_emergency() is None:  # never the light back on in an emergency
                    restore()
        latched, seconds = self._counts_nothing()
        if not latched:
            self.log.info("channel %d counts again after the bias reset", self.channel)
            return
        with self.lock:
            self._disarm()
        r_min = self._latch_params()[0]  # type: ignore[index]
        raise InstrumentError(f"{self.name}: channel {self.channel} latched: no count over {seconds:.3g} s at "
                              f"{bias:g} µA after its bias was ramped to 0 µA and back (a working channel of at least "
                              f"{r_min:g} dark counts/s, options.latch_threshold_hz, default dark_count_rate_hz / 10, "
                              f"counts none there with probability {self.latch_false_alarm(r_min):.0e}); bias left at "
                              "0 µA", instrument=self.name, resource=self.resource, command="counts")

    # -- measurements -----------------------------------------------------------------------------
    def count_rate_hz(self, integration_s: float = 0.1) -> float:
        """Counts per second of this channel over one measurement period (10 ms … 10 s) from the
        counts port. At the operating bias or above (armed), no count at all starts the latch check (module
        docstring) and, if the channel is latched, its bias is reset once (refused if it stays latched:
        :meth:`_recover_if_latched`); the rate is then read again."""
        rate = self._read_rate(integration_s)
        if self._latch_params() is None or rate * integration_s >= 0.5:  # off, or at least one count
            return rate
        with self._window:  # not self.lock: the safe state needs it (issue 19)
            if not self._labels("DetectorEnable")["DetectorEnable"] or self.bias_now_ua < self._operating_bias - 1e-6:
                return rate  # not biased at its operating point: no count says nothing of a latch
            self._recover_if_latched(None)
            return self._read_rate(integration_s)

    @property
    def _window(self) -> Any:
        """The controller's counting-window lock (:data:`_WINDOW_LOCKS`), shared by its channels."""
        with _WINDOW_LOCKS_LOCK:
            # the resource normalised as the session registry keys the shared session (and its I/O lock): one
            # controller written with another case or spacing is the same controller (review s39 LAB4)
            return _WINDOW_LOCKS.setdefault(_registry_key("", self.resource)[1], threading.RLock())

    def _open_counts(self, res: str, ms: int) -> MessageBasedResource:
        """The counts port ([W ``SQCounts.run``]) as a VISA socket, one line per measurement period of ``ms``."""
        try:
            rm = pyvisa.ResourceManager(self.link.library)
            return cast(MessageBasedResource, rm.open_resource(
                res, read_termination="\n", timeout=max(self.config.timeout_ms, 3 * ms)))
        except Exception as exc:
            raise InstrumentError(f"cannot open the counts port {res}: {exc}", instrument=self.name,
                                  resource=self.resource) from exc

    def _not_in_emergency(self, counted_s: float) -> None:
        """Raise when an emergency stop runs (:func:`~labqfl.instruments.base.in_emergency`): a counting window
        it meets ends there, with no verdict (its safe state may have ramped the bias down meanwhile: no count
        then says nothing of a latch)."""
        reason = in_emergency()
        if reason is not None:
            raise InstrumentError(f"{self.name}: channel {self.channel}: latch check cut by the emergency stop "
                                  f"({reason}) after {counted_s:.3g} s of counting; no verdict on a latch",
                                  instrument=self.name, resource=self.resource, command="counts")

    def _read_rate(self, integration_s: float) -> float:
        """One measurement period's counts of this channel from the counts port, per second. The driver's lock
        is held only to set the period: the wait for the count lines (up to 2 periods, 10 s each) holds only
        the controller's window lock, so an emergency's safe state (this channel's bias down, then the laser
        off: the station's reverse order) never waits for a window (issue 19); an emergency met at a count
        line ends the window with an error (:meth:`_not_in_emergency`), never a reading."""
        s = check_range("integration_s", integration_s, MIN_PERIOD_MS / 1e3, MAX_PERIOD_MS / 1e3, "s")
        ms = round(s * 1e3)
        host = self.resource.split("::")[1]
        res = f"TCPIP0::{host}::{self.opts.counts_port}::SOCKET"
        with self._window:
            self._not_in_emergency(0.0)
            with self.lock:
                self._command("SetMeasurementPeriod", "InptMeasurementPeriod", ms)
            counts = self._open_counts(res, ms)
            try:
                lines = []
                for _ in range(2):  # the first may cover time before the new period: discarded
                    try:
                        lines.append(str(counts.read()))
                    except Exception as exc:
                        self._not_in_emergency(max(0, len(lines) - 1) * s)
                        raise InstrumentError(f"no count line from {res}: {exc}", instrument=self.name,
                                              resource=self.resource) from exc
                    self._not_in_emergency(max(0, len(lines) - 1) * s)  # at each count line
            finally:
                counts.close()
        fields = lines[1].strip().split(",")
        try:
            counts_n = float(fields[self.channel])
        except (IndexError, ValueError):
            raise InstrumentReplyError(f"unexpected count line {','.join(fields)!r}; expected <time>,<counts>…",
                                       instrument=self.name, resource=self.resource, command="counts") from None
        if not math.isfinite(counts_n) or counts_n < 0:
            raise InstrumentReplyError(f"unexpected count line {','.join(fields)!r}; expected counts >= 0",
                                       instrument=self.name, resource=self.resource, command="counts")
        return counts_n / (ms / 1e3)

    def status(self) -> dict[str, Any]:
        st = super().status()
        with self.lock:
            st.update(channel=self.channel, enabled=self.enabled, bias_now_ua=self.bias_now_ua)
        return st

