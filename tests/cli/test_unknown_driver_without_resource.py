"""A misspelled driver name is reported as unknown, with or without a ``resource`` (review s39 user F6).

Before the fix the model's resource check ran first, so ``driver = "simm"`` without a resource gave
"driver 'simm' needs a 'resource' string", which sends the user to add a VISA address to a typo.
"""

from __future__ import annotations

import tomllib

import pytest

from labqfl.config import default_station_text, parse_station_config
from labqfl.errors import ConfigError


def _station(**laser: object) -> dict:
    data = tomllib.loads(default_station_text())
    data["laser"].update(laser)
    return data


@pytest.mark.parametrize("resource", [None, "ASRL/dev/ttyUSB0::INSTR"])
def test_misspelled_driver_is_unknown_with_or_without_resource(resource: str | None) -> None:
    laser: dict[str, object] = {"driver": "simm"}
    if resource is not None:
        laser["resource"] = resource
    with pytest.raises(ConfigError) as err:
        parse_station_config(_station(**laser), "bad_driver.toml")
    msg = str(err.value)
    assert "field 'laser.driver' (role laser): unknown driver" in msg
    assert "got 'simm'" in msg
    assert "needs a 'resource'" not in msg


def test_known_real_driver_still_needs_a_resource() -> None:
    with pytest.raises(ConfigError) as err:
        parse_station_config(_station(driver="ThorlabsPRO8000"), "no_resource.toml")
    msg = str(err.value)
    assert msg.startswith("no_resource.toml: field 'laser.resource' (role laser): driver 'ThorlabsPRO8000' needs a "
                          "'resource' string")
    assert "got none" in msg


def test_resourceless_driver_needs_none() -> None:
    # the Swabian Time Tagger is found by serial number, not by a VISA resource
    data = tomllib.loads(default_station_text())
    data["time_tagger"]["driver"] = "SwabianTimeTagger"
    cfg = parse_station_config(data, "tt.toml")
    assert cfg.time_tagger.driver == "SwabianTimeTagger" and cfg.time_tagger.resource is None
