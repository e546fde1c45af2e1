"""Review s37 lab3 L3: ``light_off_switch``'s ``off`` (before an SNSPD's latch reset ramps its bias to 0 and back)
trusted its writes. A shutter that accepted the close and stayed open let the bias go back up in the light, with no
error. A close that failed raised the attenuator's own error, with no word of the bias reset. It now reads back each
shutter and each held clock, and refuses in one line naming the role and the reset. The detector's recovery
(drivers/singlequantum_eos.py ``_recover_if_latched``) then does not cycle the bias."""

from __future__ import annotations

from typing import Any

import pytest

from labqfl.errors import InstrumentError
from labqfl.instruments.interfaces import PulseGenerator, VariableAttenuator
from labqfl.station import light_off_switch


def _fake(base: type, attr: str, *, ignore: Any = None, fail: Any = None) -> Any:
    """An instance of interface ``base`` whose ``attr`` stores what is written, except ``ignore`` (accepted, not
    applied) and ``fail`` (raises)."""
    def get(self: Any) -> Any:
        return self.state

    def put(self: Any, v: Any) -> None:
        self.writes.append(v)
        if v == fail:
            raise InstrumentError("timed out", instrument="fake")
        if v != ignore:
            self.state = v

    cls = type("Fake" + base.__name__, (base,), {attr: property(get, put)})
    cls.__abstractmethods__ = frozenset()  # type: ignore[attr-defined]
    obj = object.__new__(cls)
    obj.state, obj.writes = (False if attr == "shutter_closed" else True), []
    return obj


def test_a_shutter_that_stays_open_is_refused_before_any_bias_reset() -> None:
    voa = _fake(VariableAttenuator, "shutter_closed", ignore=True)
    with pytest.raises(InstrumentError) as err:
        light_off_switch({"C1.attenuator": voa})()  # before: returned, the shutter reading open
    assert str(err.value).startswith("C1.attenuator: shutter_closed = True accepted but shutter_closed? reads "
                                     "shutter_closed=False while taking the light off for a detector's bias reset")


def test_a_failing_close_names_the_bias_reset() -> None:
    ok, bad = _fake(VariableAttenuator, "shutter_closed"), _fake(VariableAttenuator, "shutter_closed", fail=True)
    with pytest.raises(InstrumentError) as err:
        light_off_switch({"C1.attenuator": ok, "C2.attenuator": bad})()
    assert "C2.attenuator: shutter_closed = True failed while taking the light off for a detector's bias reset" \
        in str(err.value)  # before: the attenuator's own "timed out" only
    assert ok.state is True  # closed: the safe side


def test_a_clock_that_keeps_running_is_refused() -> None:
    clock = _fake(PulseGenerator, "output_enabled", ignore=False)
    with pytest.raises(InstrumentError) as err:
        light_off_switch({"master_clock": clock})()
    assert "master_clock: output_enabled = False accepted but output_enabled? reads output_enabled=True" in str(err.value)


def test_the_light_goes_off_and_back_on_when_everything_reads_back() -> None:
    voa, clock = _fake(VariableAttenuator, "shutter_closed"), _fake(PulseGenerator, "output_enabled")
    back = light_off_switch({"C1.attenuator": voa, "master_clock": clock})()
    assert voa.state is True and clock.state is False
    back()
    assert voa.state is False and clock.state is True
