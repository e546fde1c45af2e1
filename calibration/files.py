"""Versioned calibration files and applying them to a station config.

File format (JSON, ``schema_version`` 1)::

    {"kind": "labqfl-calibration", "schema_version": 1, "created": "2025-…Z",
     "station": "<station name>", "simulated": true, "seed": 0,
     "quantities": {"D0.efficiency": {"value": 0.8, "uncertainty": 0.017, "unit": "",
                                      "procedure": "efficiency", "true": 0.8, "details": {…}}, …},
     "procedures": {"efficiency": {"quantities": [...], "raw": {…}, "plots": ["plots/efficiency.png"]}, …}}

:func:`apply_calibration` maps quantities onto the station config: detector efficiency, dark
counts, dead time, afterpulsing, jitter, gate delay; phase-modulator Vπ and bias; the detectors'
``time_tagger.cable_delays_ps`` (what the slotting uses as the calibrated propagation delay);
``loop.visibility``. :func:`check_quantities` refuses, before anything is written, a file whose
quantity has no station field (a misspelt name), names a client the station lacks, or lies outside
its allowed range (:func:`quantity_range`) by more than its uncertainties allow, whose uncertainty is
too large to say anything, or whose unit is not the field's (:data:`FIELD_UNITS`); within them the
value is clipped to the range and reported (``labqfl calibrate apply``).

Afterpulsing has one meaning in the station file: ``detectors.Dk.afterpulse_prob`` is the un-gated
probability P per click that the simulator and the key-rate model read, while the quantity
``Dk.afterpulse_prob`` of a calibration file is the registered probability P_reg that the dead-time
procedure measures (for a gated detector the afterpulses that fall in a gate, P·w/T). The station
value is P = P_reg/g with g = min(1, w/T) (:func:`station_quantity`,
:func:`~labqfl.calibration.detector.afterpulse_gate_fraction`, which says why and when it holds);
the range check applies to P (review s34 F5).
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labqfl.calibration.core import ProcedureResult, Quantity, wrap_phase
from labqfl.calibration.detector import afterpulse_gate_fraction

from labqfl.config import StationConfig, station_to_toml_dict
from labqfl.errors import ConfigError, DataFormatError
from labqfl.physics import loop_delay_ps
from labqfl.serialize import dump_toml, to_jsonable

SCHEMA_VERSION = 1
KIND = "labqfl-calibration"


@dataclass(frozen=True)
class QuantityRange:
    """The values a calibrated quantity may take in the station file, ``lo`` to ``hi`` (``text``: the
    same in words). A measurement may land just outside by its statistics (an afterpulse probability of
    −0.002 ± 0.004): within ``sigmas`` of its uncertainties it is clipped to the bound (and
    :func:`check_quantities` says so); further out it is refused, as the procedures refuse an
    efficiency more than 3σ above 1."""

    lo: float = -math.inf
    hi: float = math.inf
    text: str = "any finite value"
    sigmas: float = 3.0
    #: largest uncertainty that still says something (``None``: a quarter of the range, ``hi − lo``: a
    #: ±2σ interval as wide as the whole range carries no information about the value)
    max_sigma: float | None = None
    #: the uncertainty may be at most this fraction of the value (Vπ: its ±2σ interval must not reach 0 V)
    rel_sigma: float | None = None
    #: whether a value just below ``lo`` may be clipped onto it (not where ``lo`` only stands for "> 0":
    #: an efficiency or visibility consistent with 0 is no calibration, and 1e-6 is no value to apply)
    clip_lo: bool = True

    def clip(self, value: float) -> float:
        return float(min(max(value, self.lo), self.hi))

    def sigma_limit(self, value: float) -> tuple[float, str] | None:
        """The largest meaningful uncertainty for ``value`` and why (``None``: no limit)."""
        if self.rel_sigma is not None:
            return self.rel_sigma * abs(value), f"{self.rel_sigma:g} × the value (its ±2σ interval reaches 0)"
        if self.max_sigma is not None:
            return self.max_sigma, ""
        if math.isfinite(self.hi - self.lo):
            return (self.hi - self.lo) / 4.0, f"a quarter of the allowed range {self.text} (±2σ spans all of it)"
        return None


#: The unit of each field (what a calibration file's ``unit`` must say; "" = dimensionless). A quantity in
#: another unit is refused, not converted: the field's name carries its unit (``jitter_ps``), and a file
#: that contradicts it is not trusted to have converted its value either. A quantity stating no unit ("")
#: is taken in its field's unit (the procedures always state one; hand-written files may not).
FIELD_UNITS: dict[str, str] = {
    "efficiency": "", "dark_count_rate_hz": "Hz", "dead_time_ns": "ns", "afterpulse_prob": "", "jitter_ps": "ps",
    "gate_delay_ps": "ps", "cable_delay_ps": "ps", "v_pi_v": "V", "bias_phase_rad": "rad", "rf_gain_db": "dB",
    "visibility": "",
}
#: Highest dark-count rate [Hz]: above the count rate of any single-photon detector (SNSPD dead times are
#: ≥ 10 ns, i.e. ≤ 100 MHz; the dark-count procedure reports a saturated detector well before).
MAX_DARK_COUNT_RATE_HZ = 1e8
#: Longest dead time [ns], 1 ms: hold-offs of InGaAs SPADs are set up to ~100 µs (a 1 ms one would cap
#: the count rate at 1 kHz); the dead-time procedure measures tens of ns … µs.
MAX_DEAD_TIME_NS = 1e6

#: Allowed range of each quantity by its field (the part after ``Dk.`` / ``Ck.`` / ``loop.``); the timing
#: fields depend on the station (:func:`quantity_range`).
QUANTITY_RANGES: dict[str, QuantityRange] = {
    "efficiency": QuantityRange(1e-6, 1.0, "0 < value ≤ 1", clip_lo=False),
    "dark_count_rate_hz": QuantityRange(0.0, MAX_DARK_COUNT_RATE_HZ, "a value ≥ 0 Hz and ≤ 1e8 Hz (no detector "
                                        "counts faster)"),
    "dead_time_ns": QuantityRange(0.0, MAX_DEAD_TIME_NS, "a value ≥ 0 ns and ≤ 1e6 ns (1 ms: no detector's hold-off "
                                  "is longer)"),
    "afterpulse_prob": QuantityRange(0.0, 0.999, "0 ≤ value ≤ 0.999"),
    "jitter_ps": QuantityRange(0.0, text="a value ≥ 0 ps"),
    "gate_delay_ps": QuantityRange(),
    "cable_delay_ps": QuantityRange(),
    "dark_log_slope": QuantityRange(),
    "v_pi_v": QuantityRange(1e-9, text="a value > 0 V", sigmas=0.0, rel_sigma=0.5),
    "bias_phase_rad": QuantityRange(max_sigma=math.pi / 2),  # wrapped into (−π, π]: a quarter of the circle
    "rf_gain_db": QuantityRange(0.0, 40.0, "0 dB ≤ value ≤ 40 dB"),
    "visibility": QuantityRange(1e-6, 1.0, "0 < value ≤ 1", clip_lo=False),
}


def quantity_range(config: StationConfig, key: str) -> QuantityRange:
    """The allowed range of field ``key`` on this station: :data:`QUANTITY_RANGES`, with the timing fields
    bounded by the station's clock (T = the laser's pulse period):

    * ``cable_delay_ps``: |delay| ≤ max(the loop's propagation time n·ΣL/c, 4 sync periods): a detector
      cable delay longer than the whole fibre loop or a few sync periods is not a cable; ±2σ must stay
      within one pulse period (σ ≤ T/4), else the slot it assigns is unknown;
    * ``gate_delay_ps``: 0 ≤ value ≤ T (the gate procedure folds its scan modulo T), σ ≤ T/4;
    * ``jitter_ps``: 0 ≤ value ≤ T/√12, the rms of clicks spread uniformly over one period: a wider
      spread is no peak (the jitter fit folds modulo T).
    """
    period = 1e12 / config.laser.rep_rate_hz
    if key == "cable_delay_ps":
        sync = period * config.time_tagger.sync_divider
        bound = max(loop_delay_ps(config.loop), 4 * sync)
        return QuantityRange(-bound, bound, f"|value| ≤ {bound:.4g} ps (the loop's propagation time or 4 sync periods, "
                             f"the longer)", max_sigma=period / 4)
    if key == "gate_delay_ps":
        return QuantityRange(0.0, period, f"0 ps ≤ value ≤ {period:.4g} ps (one pulse period)", max_sigma=period / 4)
    if key == "jitter_ps":
        hi = period / math.sqrt(12.0)
        return QuantityRange(0.0, hi, f"0 ps ≤ value ≤ {hi:.4g} ps (T/√12: clicks spread over a whole pulse period)")
    return QUANTITY_RANGES[key]
#: Detector fields written under ``detectors.Dk`` (the channel delay goes to the time tagger).
DETECTOR_FIELDS = ("efficiency", "dark_count_rate_hz", "dead_time_ns", "afterpulse_prob", "jitter_ps", "gate_delay_ps")
#: The quantities a calibration file may hold, per detector (``D0``, ``D1``), per client, of the loop.
DETECTOR_QUANTITIES = (*DETECTOR_FIELDS, "cable_delay_ps", "dark_log_slope")
CLIENT_QUANTITIES = ("v_pi_v", "bias_phase_rad", "rf_gain_db")
LOOP_QUANTITIES = ("visibility",)
DETECTORS = ("D0", "D1")


def station_quantity(config: StationConfig, q: Quantity) -> Quantity:
    """``q`` as its station field holds it: a gated detector's ``Dk.afterpulse_prob`` (the registered
    probability P_reg the dead-time procedure measures) becomes the un-gated P = P_reg/g, uncertainty
    and truth alike, g = min(1, w/T) the detector's gate fraction on ``config``
    (:func:`~labqfl.calibration.detector.afterpulse_gate_fraction`: the simulator drops the afterpulses
    outside a gate and the model ``contracts.channel_model`` multiplies P by g, so writing P_reg there
    understated afterpulsing T/w-fold, 10× for a 1 ns gate at 100 MHz: review s34 F5). ``details``
    keeps the registered value and g. Every other quantity (a free-running detector's too) is ``q``."""
    owner, _, key = q.name.partition(".")
    if key != "afterpulse_prob" or owner not in config.detectors:
        return q
    det = config.detectors[owner]
    g = afterpulse_gate_fraction(det.gated, det.gate_width_ns, config.laser.rep_rate_hz)
    if g >= 1.0 or g <= 0.0:
        return q
    return Quantity(q.name, q.value / g, q.uncertainty / g, q.unit, q.procedure,
                    None if q.true is None else q.true / g,
                    {**(q.details or {}), "registered": q.value, "registered_uncertainty": q.uncertainty,
                     "gate_fraction": g})


def calibration_document(station_name: str, results: list[ProcedureResult], *, simulated: bool,
                         seed: int | None = None) -> dict[str, Any]:
    """The JSON document of a calibration session (see module docstring)."""
    qs: dict[str, Any] = {}
    procs: dict[str, Any] = {}
    for r in results:
        for q in r.quantities:
            qs[q.name] = q.as_dict()
        procs[r.procedure] = r.as_dict()
    return to_jsonable({"kind": KIND, "schema_version": SCHEMA_VERSION,
                        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                        "station": station_name, "simulated": simulated, "seed": seed,
                        "quantities": qs, "procedures": procs})


def write_calibration(path: str | Path, doc: dict[str, Any]) -> Path:
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(p)
    return p


def read_calibration(path: str | Path) -> dict[str, Any]:
    """Load and check a calibration file; DataFormatError names what is wrong."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(f"{p}: calibration file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{p}: not a readable calibration file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise DataFormatError(f"{p}: not a labqfl calibration file (expected kind {KIND!r})")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise DataFormatError(f"{p}: calibration schema version {doc.get('schema_version')!r}; this labqfl reads {SCHEMA_VERSION}")
    qs = doc.get("quantities")
    if not isinstance(qs, dict):
        raise DataFormatError(f"{p}: 'quantities' missing or not a mapping")
    for name, q in qs.items():
        if not isinstance(q, dict) or not all(k in q for k in ("value", "uncertainty", "unit")):
            raise DataFormatError(f"{p}: quantity {name!r} lacks value/uncertainty/unit")
        if not isinstance(q["value"], int | float) or isinstance(q["value"], bool):
            raise DataFormatError(f"{p}: quantity {name!r} has value {q['value']!r}; expected a number")
        if not math.isfinite(q["value"]):
            raise DataFormatError(f"{p}: quantity {name!r} has a non-finite value")
        if not isinstance(q["uncertainty"], int | float) or isinstance(q["uncertainty"], bool):
            raise DataFormatError(f"{p}: quantity {name!r} has uncertainty {q['uncertainty']!r}; expected a number")
    return doc


def quantities_from_doc(doc: dict[str, Any]) -> dict[str, Quantity]:
    return {n: Quantity(n, float(q["value"]), float(q["uncertainty"]), str(q["unit"]), str(q.get("procedure", "")),
                        q.get("true"), q.get("details", {})) for n, q in doc["quantities"].items()}


def apply_calibration(config: StationConfig, quantities: dict[str, Quantity] | dict[str, Any]) -> StationConfig:
    """A copy of ``config`` with the calibrated values written in (see module docstring).

    For simulated phase modulators the *settings* change (``v_pi_v``, ``options.bias_setting_rad``)
    while ``v_pi_error`` is adjusted so the simulator's true Vπ stays the same; for real ones
    ``v_pi_v`` and ``bias_phase_rad`` (the compensation the driver applies) are written; for a modulator fed
    by its pattern generator's bits (``GenericBitDrivenPhaseModulator``) also ``options.rf_gain_db`` (the
    ideal gain for the measured Vπ), with ``v_pi_error`` kept as the emulated loop's truth. Bias
    phases are relative to the reference client, whose setting is kept (the gauge). A gated detector's
    afterpulse probability is written un-gated, P = P_reg/g (:func:`station_quantity`).
    """
    qs: dict[str, Quantity] = {}
    for n, q in quantities.items():
        qs[n] = q if isinstance(q, Quantity) else Quantity(n, float(q["value"]), float(q["uncertainty"]), q["unit"], "")
    data = station_to_toml_dict(config)
    det = data.setdefault("detectors", {})
    for d in ("D0", "D1"):
        dd = det.get(d, {})

        for key in DETECTOR_FIELDS:
            if f"{d}.{key}" in qs:
                dd[key] = quantity_range(config, key).clip(station_quantity(config, qs[f"{d}.{key}"]).value)
        det[d] = dd
    tt = data.setdefault("time_tagger", {})
    cable = dict(tt.get("cable_delays_ps", {}))
    for d in ("D0", "D1"):
        if f"{d}.cable_delay_ps" in qs:
            cable[d] = quantity_range(config, "cable_delay_ps").clip(qs[f"{d}.cable_delay_ps"].value)
    tt["cable_delays_ps"] = cable
    if "loop.visibility" in qs:
        data["loop"]["visibility"] = QUANTITY_RANGES["visibility"].clip(qs["loop.visibility"].value)
    names = [c["name"] for c in data["clients"]]
    for c in data["clients"]:
        k = c["name"]
        pm = c.setdefault("phase_modulator", {})
        sim = pm.get("driver", "sim") == "sim"
        # a modulator fed by its pattern generator's bits: v_pi_error stays the emulated loop's truth as for a
        # simulated one, and the amplifier gain becomes the ideal one for the measured Vπ (calibration.pg_fringe)
        bits = pm.get("driver") == "GenericBitDrivenPhaseModulator"
        if bits and f"{k}.rf_gain_db" in qs:
            opts = dict(pm.get("options", {}))
            opts["rf_gain_db"] = round(QUANTITY_RANGES["rf_gain_db"].clip(qs[f"{k}.rf_gain_db"].value), 2)
            pm["options"] = opts
        if f"{k}.v_pi_v" in qs:
            v = float(qs[f"{k}.v_pi_v"].value)
            if sim or bits:
                true_vpi = float(pm.get("v_pi_v", 4.0)) / (1.0 + float(pm.get("v_pi_error", 0.0)))
                pm["v_pi_error"] = float(min(max(v / true_vpi - 1.0, -0.5), 0.5))
            pm["v_pi_v"] = v
    # bias phases relative to each client's reference (gauge: the reference keeps its setting)
    by_name = {c["name"]: c for c in data["clients"]}
    for k in names:
        q = qs.get(f"{k}.bias_phase_rad")
        if q is None:
            continue
        ref = (q.details or {}).get("reference_client")
        if ref is None or ref not in by_name:
            continue
        if k == names[0] and any(f"{o}.bias_phase_rad" in qs for o in names[1:]):
            continue  # the first client is the gauge of the others
        pm = by_name[k].setdefault("phase_modulator", {})
        pr = by_name[ref].get("phase_modulator", {})
        if pm.get("driver", "sim") == "sim":
            opts = dict(pm.get("options", {}))
            ref_set = float(pr.get("options", {}).get("bias_setting_rad", 0.0))
            opts["bias_setting_rad"] = wrap_phase(q.value + ref_set)
            pm["options"] = opts
        else:
            pm["bias_phase_rad"] = wrap_phase(q.value + float(pr.get("bias_phase_rad", 0.0)))
    from labqfl.config import parse_station_config

    return parse_station_config(data, "<calibrated station>")


@dataclass
class CalibrationCheck:
    """What :func:`apply_calibration` makes of a calibration file's quantities: ``applied`` (names written
    into the station), ``not_applied`` (name → why no station field takes it) and ``clipped`` (name →
    value, uncertainty, the bound written and the allowed range; within its uncertainties of the range;
    a gated detector's afterpulse probability as the un-gated P, with ``registered`` and ``gate_fraction``)."""

    applied: list[str] = field(default_factory=list)
    not_applied: dict[str, str] = field(default_factory=dict)
    clipped: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Refused(ValueError):
    """One quantity of a calibration file refused (collected by :func:`check_quantities`)."""


def check_quantities(config: StationConfig, quantities: dict[str, Quantity], source: str = "calibration") -> CalibrationCheck:
    """Refuse (:class:`DataFormatError`, one line naming ``source`` and each quantity refused with its
    value and what was expected) what :func:`apply_calibration` would silently ignore or clamp: a
    name it does not know (a misspelt key), a client the station lacks, a value outside its allowed
    range by more than its uncertainties allow (:data:`QUANTITY_RANGES`), a Vπ that would push a
    simulated modulator's ``v_pi_error`` beyond ±0.5, a bias phase without its reference client.
    Otherwise says which quantities are applied, which not (and why), and which are clipped."""
    if not quantities:
        raise DataFormatError(f"{source}: holds no calibrated quantity (every procedure of that session failed?); "
                              f"nothing written")
    check = CalibrationCheck()
    refused: list[str] = []
    for name, q in quantities.items():
        sq = q  # the value the station field takes (station_quantity)
        try:
            owner, key = _quantity_target(config, name)
            reason = _not_applied_reason(config, quantities, owner, key)
            if reason:
                check.not_applied[name] = reason
                continue
            _check_unit(q, key)
            sq = station_quantity(config, q)
            clipped = _check_range(sq, quantity_range(config, key))
            if key == "v_pi_v":
                _check_vpi(config, q, owner)
        except _Refused as exc:
            refused.append(str(exc) + _converted_note(q, sq))
            continue
        if clipped is not None and sq is not q:
            clipped.update(registered=q.value, gate_fraction=sq.details["gate_fraction"])
        if clipped is not None:
            check.clipped[name] = clipped
        check.applied.append(name)
    if refused:
        what = f"{len(refused)} quantities refused: " if len(refused) > 1 else ""
        raise DataFormatError(f"{source}: {what}{'; '.join(refused)}; nothing written")
    return check


def _converted_note(q: Quantity, sq: Quantity) -> str:
    """What a refusal of an afterpulse probability adds when the value checked is the un-gated one."""
    if sq is q:
        return ""
    return (f" (the un-gated P = P_reg/g of gated detector {q.name.partition('.')[0]}: registered P_reg = "
            f"{q.value:g} ± {q.uncertainty:.3g}, gate fraction g = w/T = {sq.details['gate_fraction']:g})")


def _check_unit(q: Quantity, key: str) -> None:
    """Refuse a quantity whose stated unit is not its field's (:data:`FIELD_UNITS`). An empty unit states
    none (hand-written files) and is taken as the field's: the field's name carries its unit."""
    want = FIELD_UNITS.get(key)
    if want is not None and q.unit.strip() and q.unit.strip() != want:
        raise _Refused(f"quantity {q.name!r} = {q.value:g} has unit {q.unit!r}, expected {want!r} (the field "
                       f"{key} is in {want or 'no unit'}; a value in another unit is not converted)")


def _check_range(q: Quantity, rng: QuantityRange) -> dict[str, Any] | None:
    """``None`` when ``q`` lies in ``rng``; what is written instead when it lies outside by no more than
    ``rng.sigmas`` of its uncertainty (and the bound is a value, :attr:`QuantityRange.clip_lo`); refused
    otherwise, and whenever its uncertainty is too large to say anything (:meth:`QuantityRange.sigma_limit`)."""
    u = f" {q.unit}" if q.unit else ""
    if not (math.isfinite(q.uncertainty) and q.uncertainty >= 0):
        raise _Refused(f"quantity {q.name!r} has uncertainty {q.uncertainty!r}, expected a finite number ≥ 0")
    limit = rng.sigma_limit(q.value)
    if limit is not None and q.uncertainty > limit[0]:
        why = f" = {limit[1]}" if limit[1] else ""
        raise _Refused(f"quantity {q.name!r} = {q.value:g} ± {q.uncertainty:.3g}{u}: the uncertainty is too large to "
                       f"say anything, expected at most {limit[0]:.3g}{u}{why}")
    if rng.lo <= q.value <= rng.hi:
        return None
    outside = rng.lo - q.value if q.value < rng.lo else q.value - rng.hi
    if outside > rng.sigmas * q.uncertainty:
        beyond = f" (± {q.uncertainty:.3g}: more than {rng.sigmas:g}σ outside)" if rng.sigmas else ""
        raise _Refused(f"quantity {q.name!r} = {q.value:g}{' ' + q.unit if q.unit else ''}{beyond}, "
                       f"expected {rng.text}")
    if q.value < rng.lo and not rng.clip_lo:
        raise _Refused(f"quantity {q.name!r} = {q.value:g} ± {q.uncertainty:.3g}{u} is consistent with 0, expected "
                       f"{rng.text} (not clipped: {rng.lo:g} would be no calibration)")
    return {"value": q.value, "uncertainty": q.uncertainty, "written": rng.clip(q.value), "allowed": rng.text}


def _check_vpi(config: StationConfig, q: Quantity, owner: str) -> None:
    """A simulated (or bit-driven) modulator keeps its true Vπ: the calibrated Vπ moves ``v_pi_error``,
    which the station bounds to ±0.5; refuse a Vπ beyond that (:func:`apply_calibration` clamps it)."""
    pm = config.client(owner).phase_modulator
    if pm.driver not in ("sim", "GenericBitDrivenPhaseModulator"):
        return
    true_vpi = pm.v_pi_v / (1.0 + pm.v_pi_error)
    err = q.value / true_vpi - 1.0
    if abs(err) > 0.5:
        raise _Refused(f"quantity {q.name!r} = {q.value:g} V is {err:+.0%} from the simulated modulator's true Vπ "
                       f"{true_vpi:g} V, expected within ±50 % (the station's v_pi_error range)")


def _quantity_target(config: StationConfig, name: str) -> tuple[str, str]:
    """``(owner, field)`` of quantity ``name`` (``D0``/``C2``/``loop``, ``efficiency``/…); refuses a name
    no station field has, or a client the station lacks."""
    owner, _, key = name.partition(".")
    clients = config.client_names
    if owner in clients and key in CLIENT_QUANTITIES or owner in DETECTORS and key in DETECTOR_QUANTITIES \
            or owner == "loop" and key in LOOP_QUANTITIES:
        return owner, key
    shown = "/".join(clients) if len(clients) <= 8 else f"{clients[0]}…{clients[-1]}"
    if key in CLIENT_QUANTITIES and owner not in (*DETECTORS, "loop"):
        raise _Refused(f"quantity {name!r}: station {config.name!r} has no client {owner!r} (it has {shown})")
    known = [f"{d}.{k}" for d in DETECTORS for k in DETECTOR_QUANTITIES] + \
            [f"{c}.{k}" for c in clients for k in CLIENT_QUANTITIES] + [f"loop.{k}" for k in LOOP_QUANTITIES]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise _Refused(f"unknown quantity {name!r}{hint}, expected {'/'.join(DETECTORS)}.{{{', '.join(DETECTOR_QUANTITIES)}}}, "
                   f"{shown}.{{{', '.join(CLIENT_QUANTITIES)}}} or loop.visibility")


def _not_applied_reason(config: StationConfig, quantities: dict[str, Quantity], owner: str, key: str) -> str:
    """Why the known quantity ``owner.key`` leaves the station as it is ("" when it is applied); refuses a
    bias phase without a reference client of the station."""
    name = f"{owner}.{key}"
    if key == "dark_log_slope":
        return "no station field (the detector procedures use it within a session)"
    if owner not in config.client_names:
        return ""
    if key == "rf_gain_db" and config.client(owner).phase_modulator.driver != "GenericBitDrivenPhaseModulator":
        return f"{owner}'s phase modulator is not driven by its pattern generator's bits (no amplifier gain to set)"
    if key == "bias_phase_rad":
        ref = (quantities[name].details or {}).get("reference_client")
        if ref not in config.client_names:
            raise _Refused(f"quantity {name!r}: details.reference_client is {ref!r}, expected a client of station "
                           f"{config.name!r} (the phase is relative to it)")
        first = config.client_names[0]
        if owner == first and any(f"{o}.bias_phase_rad" in quantities for o in config.client_names[1:]):
            return f"{first} is the gauge of the other clients' bias phases (it keeps its setting)"
    return ""


def write_station_toml(config: StationConfig, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write a station file (re-loadable with ``--config``); ``overwrite=False`` refuses an existing
    file (:class:`~labqfl.errors.ConfigError`) instead of replacing it."""
    p = Path(path)
    header = f"# labqfl station file written by `labqfl calibrate` on {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n"
    try:
        with p.open("w" if overwrite else "x", encoding="utf-8") as f:
            f.write(header + dump_toml(station_to_toml_dict(config)))
    except FileExistsError:
        raise ConfigError(f"{p}: file exists; not overwritten") from None
    return p


__all__ = ["QUANTITY_RANGES", "SCHEMA_VERSION", "CalibrationCheck", "QuantityRange", "apply_calibration",
           "calibration_document", "check_quantities", "quantities_from_doc", "read_calibration", "write_calibration",
           "write_station_toml"]
