"""Review s36 input F2/F4/F6: the station file accepted inf, NaN and values up to 1e308 in every numeric field
(no allow_inf_nan=False on the base model, no upper bounds); acquire/keyrate then crashed with OverflowError
tracebacks, hung (F1), or ran a silently dead station with rc 0 (NaN bias phase, inf fibre loss). Each such
value is now refused at load with one line naming the field."""

from __future__ import annotations

import copy
import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import parse_station_config
from labqfl.errors import ConfigError

BASE: dict[str, Any] = tomllib.loads(resources.files("labqfl.data").joinpath("default_station.toml").read_text())

# the fields the review found accepting nonsense (path inside the station mapping)
FIELDS = [
    ("laser", "wavelength_nm"), ("laser", "pulse_width_ps"), ("laser", "timing_jitter_ps"), ("laser", "power_mw"),
    ("laser", "timeout_ms"),
    ("loop", "fiber_loss_db_per_km"), ("loop", "node_loss_db"), ("loop", "phase_drift_rad_per_sqrt_s"),
    ("loop", "fiber_refractive_index"),
    ("clients", 0, "insertion_loss_db"), ("clients", 0, "phase_modulator", "v_pi_v"),
    ("clients", 0, "phase_modulator", "bias_phase_rad"), ("clients", 0, "phase_modulator", "gate_delay_ps"),
    ("clients", 0, "attenuator", "max_attenuation_db"),
    ("detectors", "D0", "dark_count_rate_hz"), ("detectors", "D0", "dead_time_ns"), ("detectors", "D0", "jitter_ps"),
    ("detectors", "D0", "gate_width_ns"), ("detectors", "D0", "gate_delay_ps"), ("detectors", "D0", "temperature_k"),
    ("detectors", "D0", "bias_current_ua"),
    ("time_tagger", "resolution_ps"), ("time_tagger", "sync_channel"), ("time_tagger", "sync_divider"),
    ("time_tagger", "cable_delays_ps", "D0"), ("time_tagger", "cable_delays_ps", "sync"),
    ("time_tagger", "frame_slots"), ("time_tagger", "trigger_level_v"), ("time_tagger", "reference_clock_hz"),
    ("time_tagger", "detector_channels", "D1"), ("sync", "reference_hz"), ("power_meter", "wavelength_nm"),
    ("schedule", "slots_per_frame"), ("simulation", "block_duration_s"),
]
INT_FIELDS = {"timeout_ms", "sync_channel", "sync_divider", "frame_slots", "slots_per_frame", "D1"}


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    node = d
    for k in path[:-1]:
        node = node.setdefault(k, {}) if isinstance(node, dict) else node[k]
    node[path[-1]] = value
    return d


def _values(path: tuple[Any, ...]) -> list[Any]:
    return [10**30] if path[-1] in INT_FIELDS else [math.nan, math.inf, 1e308, -1e308]


@pytest.mark.parametrize("path", FIELDS, ids=[".".join(map(str, p)) for p in FIELDS])
def test_non_finite_and_absurd_values_are_refused_naming_the_field(path: tuple[Any, ...]) -> None:
    dotted = ".".join(map(str, path))
    for value in _values(path):
        with pytest.raises(ConfigError) as ei:
            parse_station_config(_with(path, value), "st.toml")
        msg = str(ei.value)
        assert "\n" not in msg
        assert f"st.toml: field '{dotted}'" in msg, msg


def test_realistic_values_still_load() -> None:
    """The bounds sit far outside any lab: a slow, lossy, long, hot station still loads."""
    for path, value in [(("laser", "pulse_width_ps"), 1e5), (("laser", "timing_jitter_ps"), 1e3),
                        (("detectors", "D0", "dead_time_ns"), 1e5), (("detectors", "D0", "dark_count_rate_hz"), 1e8),
                        (("clients", 0, "phase_modulator", "bias_phase_rad"), -2 * math.pi),
                        (("time_tagger", "cable_delays_ps", "D0"), -5e7), (("loop", "fiber_loss_db_per_km"), 3.5),
                        (("detectors", "D0", "temperature_k"), 300.0), (("detectors", "D0", "bias_current_ua"), 70.0)]:
        parse_station_config(_with(path, value), "st.toml")


@pytest.mark.parametrize(("path", "value"), [
    (("laser", "pulse_width_ps"), 1e308),  # hung keyrate (F1)
    (("clients", 0, "phase_modulator", "bias_phase_rad"), math.nan),  # silently dead client (F4)
    (("detectors", "D0", "dead_time_ns"), math.inf),  # OverflowError traceback (F2)
])
def test_station_show_refuses_in_one_line(tmp_path: Path, path: tuple[Any, ...], value: float) -> None:
    f = tmp_path / "st.toml"
    # TOML writes nan/inf as nan/inf
    f.write_text(tomli_w.dumps(_with(path, value)))
    r = CliRunner().invoke(app, ["station", "show", "--config", str(f)])
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and f"field '{'.'.join(map(str, path))}'" in lines[0], r.output


def test_an_overflow_no_check_caught_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from labqfl.cli.common import handle_errors

    @handle_errors
    def overflows() -> None:
        math.ceil(math.inf)

    with pytest.raises(typer.Exit) as ex:
        overflows()
    assert ex.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: OverflowError: cannot convert float infinity to integer") and err.count("\n") == 1
