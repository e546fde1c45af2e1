"""Run records: ``<runs_dir>/<UTC-timestamp>-<name>/`` holding everything a run produced.

Layout of a run folder::

    config.toml        the resolved station config (re-loadable with --config)
    snapshot.json      every instrument setting at start, with units (Station.snapshot())
    metrics.json       the run's results (schema per command, documented in docs/)
    run.log            the log of the run (DEBUG level)
    data/*.h5          data files (HDF5)
    plots/*.png        figures

Location: ``--out``/``runs_dir`` argument, else ``$LABQFL_RUNS_DIR``, else ``./runs``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labqfl.config import StationConfig, parse_station_config
from labqfl.durable import replace_durably
from labqfl.errors import DataFormatError
from labqfl.log import add_file_handler
from labqfl.serialize import dump_toml, to_jsonable

RUNS_ENV = "LABQFL_RUNS_DIR"
_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]+")


def default_runs_dir() -> Path:
    env = os.environ.get(RUNS_ENV)
    return Path(env) if env else Path.cwd() / "runs"


class RunRecord:
    """One run folder. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._log_handler: logging.Handler | None = None

    # -- creation ----------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        config: StationConfig | None = None,
        runs_dir: Path | str | None = None,
        *,
        snapshot: dict[str, Any] | None = None,
        capture_log: bool = True,
    ) -> RunRecord:
        base = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        safe = _NAME_RE.sub("-", name).strip("-") or "run"
        path = base / f"{stamp}-{safe}"
        try:
            path.mkdir(parents=True, exist_ok=False)
        except (NotADirectoryError, FileExistsError, PermissionError) as exc:
            from labqfl.errors import ConfigError

            why = "a file, not a folder" if base.exists() and not base.is_dir() else (exc.strerror or str(exc))
            raise ConfigError(f"runs folder {base}: {why}; expected a folder for run folders (--out, or "
                              "$LABQFL_RUNS_DIR)") from None
        (path / "data").mkdir()
        (path / "plots").mkdir()
        rec = cls(path)
        if config is not None:
            rec.write_config(config)
        if snapshot is not None:
            rec.write_snapshot(snapshot)
        if capture_log:
            rec._log_handler = add_file_handler(path / "run.log")
        return rec

    @classmethod
    def open(cls, path: Path | str) -> RunRecord:
        p = Path(path)
        if not p.is_dir():
            raise DataFormatError(f"{p}: not a run folder (directory not found)")
        return cls(p)

    def close(self) -> None:
        if self._log_handler is not None:
            logging.getLogger("labqfl").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- contents ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    def write_config(self, config: StationConfig) -> Path:
        p = self.path / "config.toml"
        p.write_text(dump_toml(config.model_dump(mode="json", exclude_none=True)), encoding="utf-8")
        return p

    def read_config(self) -> StationConfig:
        import tomllib

        p = self.path / "config.toml"
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DataFormatError(f"{p}: cannot read run config ({exc})") from None
        return parse_station_config(data, str(p))

    def write_snapshot(self, snapshot: dict[str, Any]) -> Path:
        return self._write_json("snapshot.json", snapshot)

    def read_snapshot(self) -> dict[str, Any]:
        return self._read_json("snapshot.json")

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        """Write ``metrics.json`` atomically (temp file + rename)."""
        return self._write_json("metrics.json", metrics)

    def update_metrics(self, **items: Any) -> dict[str, Any]:
        m = self.read_metrics() if (self.path / "metrics.json").exists() else {}
        m.update(items)
        self.write_metrics(m)
        return m

    def read_metrics(self) -> dict[str, Any]:
        return self._read_json("metrics.json")

    def data_path(self, filename: str) -> Path:
        return self.path / "data" / filename

    def plot_path(self, filename: str) -> Path:
        return self.path / "plots" / filename

    def _write_json(self, filename: str, data: Any) -> Path:
        p = self.path / filename
        replace_durably(p, json.dumps(to_jsonable(data), indent=2) + "\n")
        return p

    def _read_json(self, filename: str) -> dict[str, Any]:
        p = self.path / filename
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataFormatError(f"{p}: missing from run folder") from None
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{p}: corrupt JSON ({exc})") from None


def list_runs(runs_dir: Path | str | None = None) -> list[RunRecord]:
    base = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not base.is_dir():
        return []
    return [RunRecord(p) for p in sorted(base.iterdir()) if p.is_dir()]
