"""Station variants for tests, benchmarks and what-if runs (built from a config as plain dicts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labqfl.config import (
    StationConfig,
    load_station_config,
    parse_station_config,
    station_to_toml_dict,
)


def edit_station(edit: Callable[[dict[str, Any]], None] | None = None, base: StationConfig | None = None,
                 n_clients: int | None = None, extra_loss_db: float = 0.0,
                 randomness: str | None = None) -> StationConfig:
    """A validated copy of ``base`` (default: the embedded station), optionally with ``n_clients``
    clones of its first client (seeds 1001, 1002, …; the loop's total length kept and split evenly),
    ``extra_loss_db`` added to the node loss, every client's ``randomness`` set (``"seeded"`` for
    reproducible tests and benchmarks), then ``edit(d)`` applied to the plain dict."""
    d = station_to_toml_dict(base if base is not None else load_station_config())
    if n_clients is not None:
        first = d["clients"][0]
        d["clients"] = [{**first, "name": f"C{k + 1}", "seed": 1001 + k} for k in range(n_clients)]
        total = sum(d["loop"]["segments_km"])
        d["loop"]["segments_km"] = [total / (n_clients + 1)] * (n_clients + 1)
    if extra_loss_db:
        d["loop"]["node_loss_db"] = d["loop"]["node_loss_db"] + extra_loss_db
    if randomness is not None:
        for c in d["clients"]:
            c["randomness"] = randomness
    if edit is not None:
        edit(d)
    return parse_station_config(d, "<edited station>")


def ideal_detectors(d: dict[str, Any]) -> None:
    """Edit: no dead time, no afterpulsing, no loop drift (the regime of the analytical model)."""
    for det in d["detectors"].values():
        det["dead_time_ns"] = 0.0
        det["afterpulse_prob"] = 0.0
    d["loop"]["phase_drift_rad_per_sqrt_s"] = 0.0
