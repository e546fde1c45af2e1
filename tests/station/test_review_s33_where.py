"""Review s33 L9: a role without a resource (an SDK driver opening the SDK's first device) is named as such
in the station's one-line failure, never "SwabianTimeTagger at None"."""

from __future__ import annotations

import sys
import tomllib

import pytest

from labqfl.config import default_station_text, parse_station_config
from labqfl.errors import StationError
from labqfl.station import Station

from .conftest import _drivers_conftest


def _no_device(serial: str = "") -> None:
    raise RuntimeError("No Time Tagger attached or already in use.")


@pytest.mark.parametrize(("options", "where"), [
    ("", "SwabianTimeTagger on the SDK's first device"),
    ('options = { serial = "1910000ABC" }\n', "SwabianTimeTagger serial '1910000ABC'"),
])
def test_a_resourceless_role_is_named_by_what_it_opens(monkeypatch: pytest.MonkeyPatch, options: str,
                                                       where: str) -> None:
    sdk = _drivers_conftest().make_fake_sdk()
    sdk.createTimeTagger = _no_device
    monkeypatch.setitem(sys.modules, "TimeTagger", sdk)
    monkeypatch.setitem(sys.modules, "Swabian.TimeTagger", sdk)
    text = default_station_text().replace('[time_tagger]\ndriver = "sim"\n',
                                          f'[time_tagger]\ndriver = "SwabianTimeTagger"\n{options}')
    assert 'driver = "SwabianTimeTagger"' in text
    with pytest.raises(StationError) as err:
        Station(parse_station_config(tomllib.loads(text)))
    msg = str(err.value)
    assert msg.startswith(f"role 'time_tagger' ({where}) failed to open: ") and "No Time Tagger attached" in msg
    assert "None" not in msg and "\n" not in msg
