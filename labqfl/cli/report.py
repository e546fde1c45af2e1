"""``labqfl report RUN_DIR [--json]``: rebuild a run folder's ``report.html`` and its plots from the folder's
``metrics.json`` (review s40 user LOW-4: no command re-rendered a report).

Folders of three commands hold what a report is built from (docs/metrics.md):

* ``labqfl run``: ``metrics.json`` of schema ``labqfl.run/1``, read as written (:func:`labqfl.report.write_report`).
* ``labqfl distill``: the summary ``distill --json`` prints, mapped onto the run schema's sections it fills
  (run settings, key distillation, dropped slots); it has no timeline, count-rate series or key pools, so the
  report has no plots.
* ``labqfl train`` / ``labqfl node train``: the training summary, as the run schema's ``train`` (the training
  table and plot).

``labqfl acquire`` writes an HDF5 recording, not a run folder: its report is that of the ``distill`` run folder
made from it.
"""

from __future__ import annotations

import datetime
import tomllib
from pathlib import Path
from typing import Any

import typer

from labqfl.cli.common import JSON_OPTION, emit, fail, handle_errors, print_path

#: What a RUN_DIR must be, in the one error line of a bad one
EXPECTED = ("expected a run folder written by `labqfl run`, `labqfl distill` or `labqfl train` (it holds "
            "metrics.json)")

#: The schema of ``labqfl run``'s metrics.json (:data:`labqfl.mainjob.SCHEMA`, not imported: it loads the job's stack)
RUN_SCHEMA = "labqfl.run/1"


def folder_kind(metrics: dict[str, Any]) -> str | None:
    """Which command wrote a run folder's ``metrics``: "run", "distill", "train", or None (none of them)."""
    if metrics.get("schema") == RUN_SCHEMA:
        return "run"
    if isinstance(metrics.get("pairs"), dict) and "source" in metrics and "engine" in metrics:
        return "distill"
    if "task" in metrics and isinstance(metrics.get("rounds"), list) and "key_source" in metrics:
        return "train"
    return None


def _written_utc(path: Path) -> str:
    """When ``path`` was last written, as ``labqfl run``'s ``written_utc`` (ISO 8601, UTC): the distill and train
    summaries do not record it."""
    return datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC).isoformat(timespec="seconds")


def _station_name(folder: Path) -> str | None:
    """The station's name in a run folder's ``config.toml`` (None where it has none or cannot be read)."""
    try:
        name = tomllib.loads((folder / "config.toml").read_text(encoding="utf-8")).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return str(name) if name is not None else None


def distill_as_run(d: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A ``labqfl distill`` summary (its metrics.json) as the sections of the run schema it fills: settings
    (engine, block size, station time), ``distill.pairs`` with each pair's ``status`` and ``qber_x`` as ``labqfl
    run`` derives them (:func:`labqfl.mainjob.distill_pair_metrics`), and the acquisition's slotting and
    modulation counters (the "Dropped slots" section). No number is made up: what the summary lacks (a timeline,
    count rates, key pools, training) is left out of the report."""
    pairs = {}
    for name, p in d["pairs"].items():
        reasons = p.get("abort_reasons") or []
        status = "ok" if p.get("final_key_bits") else ("abort: " + "; ".join(reasons) if reasons else "no key")
        pairs[name] = {**p, "status": status, "qber_x": (p.get("error_rate") or {}).get("X_key")}
    # ε_sec of the blocks (the weakest pair's, as the provenance records it; distill has no option for it)
    eps = [w["eps_sec"] for v in ((d.get("provenance") or {}).get("pairs") or {}).values()
           if isinstance(w := v.get("weakest"), dict) and w.get("eps_sec") is not None]
    rule = d.get("block_rule") is not None  # the block-size rule chose the block (no --block-bits given)
    return {
        "run": folder.name, "status": "complete" if "error" not in d else f"no key: {d['error']}",
        "station": _station_name(folder) or "?", "key_source": "qkd", "written_utc": _written_utc(folder / "metrics.json"),
        "settings": {"engine": d.get("engine"), "block_bits": None if rule else d.get("block_bits"),
                     "duration_s": d.get("duration_s"), "eps_sec": max(eps) if eps else None},
        "plan": {"predicted": {"block_slots": d.get("block_slots")}} if rule else None,
        "phases_s": {"distill": d["wall_s"], "total_s": d["wall_s"]} if d.get("wall_s") is not None else None,
        "acquire": {"duration_s": d.get("duration_s")},
        "distill": {"pairs": pairs},
        "acquisition": {"path": d.get("source", "?"), "slotting": d.get("slotting"), "modulation": d.get("modulation")},
    }


def train_as_run(t: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A ``labqfl train`` / ``node train`` summary as the run schema's ``train`` (and the settings the report's
    summary reads from it)."""
    return {"run": folder.name, "status": "complete", "station": "none (training only)",
            "key_source": t.get("key_source", "?"), "written_utc": _written_utc(folder / "metrics.json"),
            "settings": {"task": t.get("task"), "rounds": t.get("rounds_requested"), "q": t.get("q"),
                         "seed": t.get("seed")},
            "acquisition": {"path": "none (training only)"},
            # the run schema's names of the training summary's figures (labqfl.mainjob writes both from one round list)
            "train": {**t, "rounds_run": t.get("rounds_run", len(t["rounds"])),
                      "upload_bits_per_client": t.get("upload_bits_per_client",
                                                      t.get("upload_bits_per_client_per_round")),
                      "baseline_upload_bits_per_client": t.get("baseline_upload_bits_per_client",
                                                               t.get("baseline_upload_bits_per_client_per_round"))}}


def _read(folder: Path) -> tuple[str, dict[str, Any]]:
    """The kind of run folder ``folder`` is and its metrics as the run schema; one clear error otherwise."""
    import json

    if not folder.exists():
        raise fail(f"{folder}: no such folder; {EXPECTED}")
    if not folder.is_dir():
        if folder.suffix.lower() in (".h5", ".hdf5"):
            raise fail(f"{folder} is a file (a recording of `labqfl acquire`?), not a run folder: a recording has no "
                       f"report of its own; `labqfl distill {folder}` distils it into a run folder, whose report "
                       "`labqfl report` rebuilds")
        raise fail(f"{folder} is a file, not a folder; {EXPECTED}")
    path = folder / "metrics.json"
    if not path.is_file():
        if (folder / "state.json").is_file():
            raise fail(f"{folder}: no metrics.json: the `labqfl run` stopped before it wrote its results "
                       f"(`labqfl run --resume {folder}` continues it and writes its report)")
        raise fail(f"{folder}: not a run folder (no metrics.json); {EXPECTED}")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise fail(f"{path}: corrupt JSON ({exc}); {EXPECTED}") from None
    kind = folder_kind(metrics) if isinstance(metrics, dict) else None
    if kind is None:
        raise fail(f"{path}: not the metrics of `labqfl run`, `distill` or `train` (schema "
                   f"{metrics.get('schema') if isinstance(metrics, dict) else None!r}); {EXPECTED}")
    if kind == "distill":
        return kind, distill_as_run(metrics, folder)
    if kind == "train":
        return kind, train_as_run(metrics, folder)
    return kind, metrics


def rebuild_report(folder: Path) -> dict[str, Any]:
    """Write ``folder``'s ``report.html`` and plots anew from its ``metrics.json``
    (:func:`labqfl.report.write_report`); returns ``{"report", "run_dir", "kind", "plots"}`` (``plots``: the
    PNGs of the folder's ``plots/``). A metrics file the report cannot be built from is one clear error."""
    from labqfl.report import write_report
    from labqfl.runs import RunRecord

    kind, metrics = _read(folder)
    (folder / "plots").mkdir(exist_ok=True)
    try:
        out = write_report(RunRecord(folder), metrics, command=kind)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        raise fail(f"{folder / 'metrics.json'}: cannot build a report from it ({type(exc).__name__}: {exc}); "
                   "expected the metrics its command wrote (docs/metrics.md)") from None
    return {"report": str(out), "run_dir": str(folder), "kind": kind,
            "plots": [str(p) for p in sorted((folder / "plots").glob("*.png"))]}


def _render(con: Any, doc: dict[str, Any]) -> None:
    if not doc["plots"]:
        con.print(f"no plots: a {doc['kind']} run folder holds no timeline, count-rate series or key pools "
                  "(`labqfl run` records them)", soft_wrap=True)
    for p in doc["plots"]:
        print_path(con, "plot", p)
    print_path(con, "report", doc["report"])


@handle_errors
def report(run_dir: Path = typer.Argument(..., metavar="RUN_DIR",
                                          help="Run folder of `labqfl run`, `labqfl distill` or `labqfl train`."),
           as_json: bool = JSON_OPTION) -> None:
    """Rebuild a run folder's report.html and plots from its metrics.json (e.g. after an upgrade, or where it
    was deleted). JSON: {"report", "run_dir", "kind", "plots"}."""
    doc = rebuild_report(run_dir)
    emit(doc, as_json, lambda con: _render(con, doc))


def register(app: typer.Typer) -> None:
    app.command("report")(report)


__all__ = ["rebuild_report", "folder_kind"]
