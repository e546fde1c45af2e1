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
``loop.visibility``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labqfl.calibration.core import ProcedureResult, Quantity, wrap_phase

from labqfl.config import StationConfig, station_to_toml_dict
from labqfl.errors import DataFormatError
from labqfl.serialize import dump_toml, to_jsonable

SCHEMA_VERSION = 1
KIND = "labqfl-calibration"


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
        if not (isinstance(q["value"], int | float) and math.isfinite(q["value"])):
            raise DataFormatError(f"{p}: quantity {name!r} has a non-finite value")
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
    phases are relative to the reference client, whose setting is kept (the gauge).
    """
    qs: dict[str, Quantity] = {}
    for n, q in quantities.items():
        qs[n] = q if isinstance(q, Quantity) else Quantity(n, float(q["value"]), float(q["uncertainty"]), q["unit"], "")
    data = station_to_toml_dict(config)
    det = data.setdefault("detectors", {})
    for d in ("D0", "D1"):
        dd = det.get(d, {})

        def put(key: str, qname: str, lo: float = -math.inf, hi: float = math.inf, dd: dict[str, Any] = dd) -> None:
            if qname in qs:
                dd[key] = float(min(max(qs[qname].value, lo), hi))
        put("efficiency", f"{d}.efficiency", 1e-6, 1.0)
        put("dark_count_rate_hz", f"{d}.dark_count_rate_hz", 0.0)
        put("dead_time_ns", f"{d}.dead_time_ns", 0.0)
        put("afterpulse_prob", f"{d}.afterpulse_prob", 0.0, 0.999)
        put("jitter_ps", f"{d}.jitter_ps", 0.0)
        put("gate_delay_ps", f"{d}.gate_delay_ps")
        det[d] = dd
    tt = data.setdefault("time_tagger", {})
    cable = dict(tt.get("cable_delays_ps", {}))
    for d in ("D0", "D1"):
        if f"{d}.cable_delay_ps" in qs:
            cable[d] = float(qs[f"{d}.cable_delay_ps"].value)
    tt["cable_delays_ps"] = cable
    if "loop.visibility" in qs:
        data["loop"]["visibility"] = float(min(max(qs["loop.visibility"].value, 1e-6), 1.0))
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
            opts["rf_gain_db"] = round(float(min(max(qs[f"{k}.rf_gain_db"].value, 0.0), 40.0)), 2)
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


def write_station_toml(config: StationConfig, path: str | Path) -> Path:
    """Write a station file (re-loadable with ``--config``)."""
    p = Path(path)
    header = f"# labqfl station file written by `labqfl calibrate` on {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n"
    p.write_text(header + dump_toml(station_to_toml_dict(config)), encoding="utf-8")
    return p


__all__ = ["SCHEMA_VERSION", "apply_calibration", "calibration_document", "quantities_from_doc", "read_calibration",
           "write_calibration", "write_station_toml"]
