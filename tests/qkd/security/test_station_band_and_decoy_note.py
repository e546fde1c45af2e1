"""`labqfl keyrate` predicts with the station's declared intensity band (review s36 physics F2), and the
station optimiser says when the decoy it returns is a second vacuum (review s36 physics F4)."""

from __future__ import annotations

import json
import warnings

from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import default_station_text, load_station_config
from labqfl.qkd.keyrate import (
    optimize_pair,
    optimize_station,
    station_pair_channel,
    station_with_operating_point,
    weak_decoy_note,
)


def test_keyrate_cli_uses_the_declared_band(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = default_station_text().replace("basis_x_prob = 0.98", "basis_x_prob = 0.98\nintensity_rel_uncertainty = 0.05")
    assert text.count("intensity_rel_uncertainty") == 4
    f = tmp_path / "banded.toml"
    f.write_text(text, encoding="utf-8")
    out = {}
    for name, args in (("exact", []), ("banded", ["--config", str(f)])):
        r = CliRunner().invoke(app, ["keyrate", "--pair", "C1-C4", "--block-size", "1.6671e8", "--json", *args])
        assert r.exit_code == 0, r.output
        out[name] = json.loads(r.stdout)["results"][0]["bits_per_second"]
    assert abs(out["exact"] - 58.27e3) < 10  # the embedded station declares none: unchanged
    assert abs(out["banded"] - 51.72e3) < 10  # docs/station.md, the δ table


def _with_decoy(nu: float):  # type: ignore[no-untyped-def]
    cfg = load_station_config()
    c0 = cfg.clients[0]
    return station_with_operating_point(cfg, {c.name: c.intensities[0] for c in cfg.clients}, nu,
                                        tuple(c0.intensity_probs), c0.basis_x_prob)


def test_a_decoy_below_a_tenth_of_the_brightest_signal_is_named() -> None:
    assert weak_decoy_note(load_station_config()) == ""  # ν = 0.05 against μ ≤ 0.0263
    note = weak_decoy_note(_with_decoy(0.0017))  # what the floored optimiser returned for the 10 s block
    assert "decoy intensity 0.0017 of C1, C2, C3, C4 is below 0.1 x the brightest signal (0.0263)" in note
    assert "--min-decoy-prob" in note


def test_the_station_optimiser_warns_when_it_returns_a_second_vacuum() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = optimize_station(_with_decoy(0.0017), 1.6671e8, max_evaluations=1, min_decoy_prob=0.02, min_y_prob=0.02)
    said = [str(w.message) for w in caught if "second vacuum" in str(w.message)]
    # with one evaluation the optimiser keeps the given point, whose decoy of 0.0017 it now names
    assert res.config.clients[0].intensities[1] < 0.1 * 0.0263 and said == [weak_decoy_note(res.config)]


def test_the_station_optimiser_keeps_a_declared_extinction_floor() -> None:
    """A hardware station declares its modulator's floor as the vacuum level (docs/lab_setup.md); the optimiser
    refused any third intensity but an exact 0, and station_with_operating_point reset it to 0."""
    cfg = load_station_config()
    c = cfg.model_copy(deep=True)
    for cl in c.clients:
        cl.intensities = [cl.intensities[0], cl.intensities[1], 1e-3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = optimize_station(c, 1.6671e8, max_evaluations=1, min_decoy_prob=0.02, min_y_prob=0.02)
    assert all(cl.intensities[2] == 1e-3 for cl in res.config.clients)
    assert 29e3 < min(p.bits_per_second for p in res.after) < 31e3  # C1-C4 29.25 kbit/s (docs/lab_setup.md)


def test_the_pair_optimiser_keeps_a_declared_extinction_floor() -> None:
    """`labqfl keyrate --optimize` (per pair) replaced the vacuum level by an exact 0: with a declared 10⁻³ floor
    it predicted the exact-vacuum key, about twice what the floor allows at this point."""
    cfg = load_station_config()
    for cl in cfg.clients:
        cl.intensities = [cl.intensities[0], cl.intensities[1], 1e-3]
    res = optimize_pair(station_pair_channel(cfg, ("C1", "C4")), 1.6671e8, 6, 1e8, max_evaluations=5)
    assert res.prediction.intensities_i[2] == res.prediction.intensities_j[2] == 1e-3
