"""Review s38 lab4 nit: ``DistillSession.run`` rebuilt every ``InstrumentError`` met while reading the blocks as a
plain ``InstrumentError(...) from None`` to add the end check's stored-blocks line (512ed89): an instrument timeout
lost its subclass, its instrument/resource/command fields and its cause. Now only the end check's refusal
(``AcquisitionRefused``, raised by ``labqfl.station.refuse_faulty_acquisition``) gets the line; any other
instrument error goes on as it was raised. Run on a stand-in session and source (the blocks raise at once)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from labqfl.app.distill import DistillSession
from labqfl.errors import AcquisitionRefused, InstrumentError, InstrumentTimeout
from labqfl.station import refuse_faulty_acquisition


def _run(exc: BaseException) -> InstrumentError:
    def blocks() -> Iterator[Any]:
        raise exc
        yield  # pragma: no cover

    session = DistillSession.__new__(DistillSession)
    session.start = lambda logs, acq, stop=None: SimpleNamespace(stopped=False,  # type: ignore[method-assign]
                                                                 abandon=lambda: None)
    source = SimpleNamespace(logs=None, acquisition_id="acq", blocks=blocks(), duration_s=None)
    with pytest.raises(InstrumentError) as info:
        session.run(source)  # type: ignore[arg-type]
    return info.value


def test_an_instrument_timeout_keeps_its_type_fields_and_cause() -> None:
    cause = TimeoutError("VI_ERROR_TMO")
    timeout = InstrumentTimeout("no answer", instrument="time_tagger", resource="USB0::1", command="COUNT?")
    timeout.__cause__ = cause
    err = _run(timeout)
    assert err is timeout  # before: a new plain InstrumentError, from None
    assert (err.instrument, err.resource, err.command) == ("time_tagger", "USB0::1", "COUNT?")
    assert err.__cause__ is cause


def test_the_end_checks_refusal_still_names_the_key_blocks_stored() -> None:
    with pytest.raises(AcquisitionRefused) as info:
        refuse_faulty_acquisition(["D0: latched"], "acquisition a1", "the rest is dropped")
    err = _run(info.value)
    assert isinstance(err, AcquisitionRefused)
    assert str(err).startswith("acquisition a1: at its end the instruments no longer read as armed: D0: latched")
    assert str(err).endswith("; no key block had been stored from it")
