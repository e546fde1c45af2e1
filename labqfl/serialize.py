"""How labqfl writes its data files: the JSON policy and the minimal TOML writer.

Used by run folders (:mod:`labqfl.runs`), calibration files, recordings and every front end's
``--json`` output, so it sits below all of them and imports nothing of labqfl.

* :func:`to_jsonable` — numpy scalars/arrays, dataclasses, pydantic models, paths and non-finite
  floats (written as ``null``) into JSON types; raw ``bytes`` are refused (possible key material).
* :func:`dump_toml` — station-config dicts into TOML (tables, arrays of tables, scalars, inline
  dicts), re-loadable by :func:`labqfl.config.load_station_config`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, dataclasses, paths and non-finite floats into JSON types."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump(mode="json"))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes | bytearray):
        raise TypeError("refusing to serialise raw bytes (possible key material)")
    return obj


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """Minimal TOML writer for config dicts (tables, arrays of tables, scalars, inline dicts)."""
    lines: list[str] = []

    def table(prefix: str, d: dict[str, Any], array: bool = False) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and not _is_table_list(v)}
        subs = {k: v for k, v in d.items() if isinstance(v, dict) and v and _has_nested(v)}
        inline = {k: v for k, v in d.items() if isinstance(v, dict) and k not in subs}
        tlists = {k: v for k, v in d.items() if _is_table_list(v)}
        if prefix:
            lines.append(f"\n[[{prefix}]]" if array else f"\n[{prefix}]")
        for k, v in {**scalars, **inline}.items():
            lines.append(f"{json.dumps(k) if not re.fullmatch(r'[A-Za-z0-9_-]+', k) else k} = {_toml_value(v)}")
        for k, v in subs.items():
            table(f"{prefix}.{k}" if prefix else k, v)
        for k, v in tlists.items():
            for item in v:
                table(f"{prefix}.{k}" if prefix else k, item, array=True)

    table("", data)
    return "\n".join(lines).strip() + "\n"


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _has_nested(d: dict[str, Any]) -> bool:
    # Dicts that are config sections (contain scalars of a model) become [tables]; small
    # mappings like detector_channels stay inline. Heuristic: a section if any value is a dict
    # or the dict holds non-numeric values of mixed kinds.
    return any(isinstance(v, dict) or _is_table_list(v) for v in d.values()) or any(
        isinstance(v, str | bool | list) for v in d.values()
    )


def refuse_existing(path: Path, what: str = "", hint: str = "") -> None:
    """Refuse (:class:`~labqfl.errors.ConfigError`, one line) to replace the existing file ``path``:
    nothing overwrites a user's file unasked (the commands' ``--force`` asks). ``what``: the option
    that named it (none for a default name); ``hint``: another way out, e.g. ", or --out to name another file"."""
    from labqfl.errors import ConfigError

    label = f"{what} {path}" if what else str(path)
    if path.is_dir():
        raise ConfigError(f"{label}: is a directory; expected a file name")
    if path.exists() or path.is_symlink():
        raise ConfigError(f"{label}: file exists; not overwritten (pass --force to replace it{hint})")
