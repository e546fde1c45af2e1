"""Each SCPI driver's ``*IDN?`` check against replies of real units published outside this project.

The drivers refuse an instrument whose ``*IDN?`` does not name the model they are for (IEEE 488.2
§10.14: manufacturer, model, serial, firmware), before any setting is written. These replies were
printed by real instruments and published with the code or documentation that queried them; a
pattern tightened past what real units answer (for example "Keysight" only, while 33500B units sold
before the Keysight split and later firmware still answer "Agilent Technologies", the format the
33500 Series Operating and Service Guide gives under ``*IDN?``) fails here. No public reply was
found for the N7764A or the MBX, so they are not listed.
"""

from __future__ import annotations

import re

import pytest
from labqfl.drivers.keysight_33500b import Keysight33500B
from labqfl.drivers.keysight_n7764a import KeysightN7764A
from labqfl.drivers.thorlabs_mbx import ThorlabsMBX
from labqfl.drivers.thorlabs_pm100usb import ThorlabsPM100USB
from labqfl.drivers.thorlabs_pro8000 import ThorlabsPRO8000

DRIVERS = (Keysight33500B, KeysightN7764A, ThorlabsMBX, ThorlabsPM100USB, ThorlabsPRO8000)

#: (reply, the driver it names, where it was published)
PUBLIC_REPLIES = [
    ("Agilent Technologies,33522B,MY57801384,4.00-1.19-2.00-58-00", Keysight33500B,
     "a MATLAB script driving a 33522B over USB (reply in its comment)"),
    ("Agilent Technologies,33522B,MY52802702,2.09-1.19-2.00-52-00", Keysight33500B,
     "a PyVISA 33500B waveform script's README, printed output"),
    ("Thorlabs,PM100D,P0009084,2.4.0", ThorlabsPM100USB,
     "Instrumental (mabuchilab) docs, 'VISA Driver Example', *IDN? of a PM100D"),
    ("Thorlabs,PM100USB,P2004525,1.4.0", ThorlabsPM100USB, "the PM100 emulator of the COMET instrument framework (its IDENTITY)"),
    ("Thorlabs,PM100A,P1003352,2.4.0", ThorlabsPM100USB, "a MATLAB PM100 script's comment listing unit replies"),
    ("PROFILE, PRO8000, 0, Ver.4.28-1.22", ThorlabsPRO8000,
     "GitHub TanguyBoulard/Lumibird-Characterization-Bench, PRO8000.py (commit 2c300ab): Initialize() compares "
     "the unit's *IDN? with this string (PRO8000 over RS-232, with :TEMP:SET/:TEC ON/:ILD:SET/:LASER ON)"),
]
#: a reply of an instrument none of these drivers is for (same Instrumental docs page)
FOREIGN = "TEKTRONIX,TDS 1001B,C101689,CF:91.1CT FV:v22.11"


def _accepts(driver: type, reply: str) -> bool:
    ident = driver.IDENTITY
    assert ident is not None, f"{driver.__name__} names no identity"
    # the same test as MessageDriver._read_identity
    return re.search(ident.pattern, reply, re.IGNORECASE) is not None


@pytest.mark.parametrize(("reply", "driver", "source"), PUBLIC_REPLIES)
def test_a_real_units_reply_is_accepted_by_its_driver_only(reply: str, driver: type, source: str) -> None:
    assert _accepts(driver, reply), f"{driver.__name__} refuses {reply!r} ({source})"
    others = [d.__name__ for d in DRIVERS if d is not driver and _accepts(d, reply)]
    assert others == [], f"{reply!r} is also accepted by {others}"


def test_another_instruments_reply_is_refused_by_every_driver() -> None:
    assert [d.__name__ for d in DRIVERS if _accepts(d, FOREIGN)] == []
