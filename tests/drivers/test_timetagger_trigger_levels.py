"""Per-channel trigger levels of the Time Tagger (review s36 M4).

Sources: ``setTriggerLevel(channel, voltage)`` "Set the trigger level of an input channel in Volts" and
``getModel()`` "Returns the model name as string" (swabian-timetagger 2.22.6, ``Swabian/TimeTagger/__init__.py``);
trigger level range per model from the Time Tagger user manual, "Hardware", "Electrical characteristics":
Time Tagger 20 0.0 to 2.5 V, Time Tagger Ultra -2.5 to 2.5 V, Time Tagger X -1 to 1 V.
"""

from __future__ import annotations

import tomllib

import pytest
from labqfl.drivers.swabian_timetagger import SwabianTimeTagger

from labqfl.config import TimeTaggerConfig, default_station_text, parse_station_config
from labqfl.errors import ConfigError


def _cfg(**kw: object) -> TimeTaggerConfig:
    return TimeTaggerConfig(driver="SwabianTimeTagger", options={"serial": "X"}, marker_channel=4, **kw)


def test_each_channel_gets_its_named_level_the_others_the_single_value(fake_sdk) -> None:  # type: ignore[no-untyped-def]
    t = SwabianTimeTagger("time_tagger", _cfg(trigger_level_v=0.3, trigger_levels_v={"sync": 1.0, "D0": -0.1,
                                                                                        "marker": 1.2}), sdk=fake_sdk)
    try:
        assert t.trigger_levels_v == {1: 1.0, 2: -0.1, 3: 0.3, 4: 1.2}  # sync 1, D0 2, D1 3, marker 4
        calls = [c[1] for c in fake_sdk.created[0].calls if c[0] == "setTriggerLevel"]
        assert sorted(calls) == [(1, 1.0), (2, -0.1), (3, 0.3), (4, 1.2)]
    finally:
        t.close()


def _station(**tt: object) -> dict[str, object]:
    d = tomllib.loads(default_station_text())
    d["time_tagger"].update(driver="SwabianTimeTagger", options={"serial": "X"}, **tt)
    return d


def test_station_file_refuses_unknown_names_and_levels_no_tagger_can_set() -> None:
    cfg = parse_station_config(_station(trigger_levels_v={"D0": -0.2, "sync": 1.0}), "st.toml")
    assert cfg.time_tagger.trigger_levels_v == {"D0": -0.2, "sync": 1.0}
    with pytest.raises(ConfigError) as err:
        parse_station_config(_station(trigger_levels_v={"D9": 0.1}), "st.toml")
    assert "\n" not in str(err.value)
    assert "time_tagger.trigger_levels_v names unknown channels ['D9']; expected names from ['D0', 'D1', 'sync']" \
        in str(err.value)
    with pytest.raises(ConfigError, match=r"^st\.toml: field 'time_tagger\.trigger_levels_v\.D1' \(role time_tagger\): "
                       r"outside what SwabianTimeTagger can set; expected -2\.5 to 2\.5 V; got 3\.0$"):
        parse_station_config(_station(trigger_levels_v={"D1": 3.0}), "st.toml")


@pytest.mark.parametrize(("model", "levels", "message"), [
    ("Time Tagger 20", {"D0": -0.1}, r"time_tagger\.trigger_levels_v\.D0 = -0\.1 V is outside the trigger level range "
                                     r"of this Time Tagger 20; expected 0 to 2\.5 V"),
    ("Time Tagger X", {"sync": 1.5}, r"time_tagger\.trigger_levels_v\.sync = 1\.5 V .* Time Tagger X; expected -1 to 1 V"),
])
def test_a_level_outside_the_models_range_is_refused_at_open(monkeypatch: pytest.MonkeyPatch, swabian_fakes,  # type: ignore[no-untyped-def]
                                                             model: str, levels: dict[str, float], message: str) -> None:
    monkeypatch.setattr(swabian_fakes.FakeTagger, "getModel", lambda self: model)
    sdk = swabian_fakes.make_fake_sdk()
    with pytest.raises(ValueError, match=message):
        SwabianTimeTagger("time_tagger", _cfg(trigger_levels_v=levels), sdk=sdk)
    assert not any(c[0] == "setTriggerLevel" for c in sdk.created[0].calls)  # refused before anything was set
    SwabianTimeTagger("time_tagger", _cfg(trigger_levels_v={k: 0.2 for k in levels}), sdk=sdk).close()
