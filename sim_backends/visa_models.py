"""Python models that pyvisa-sim's YAML cannot express, attached to a simulated VISA session when it opens.

A pyvisa-sim device answers from its YAML: fixed dialogues and properties that echo their last value. Where an
instrument's reply must follow other settings, a Python model wraps the device's matcher. The VISA link
(:class:`labqfl.drivers._link.Link`) calls :func:`attach` on every pyvisa-sim session it opens (``…@sim``), so a
driver never knows whether it talks to an instrument or to the simulator; a device served over loopback by
:class:`~labqfl.sim_backends.visa_tcp.VisaSimTCPServer` gets the same models there.

Models: the Thorlabs PRO8000's actual laser-diode current (``:ILD:ACT?``, :mod:`labqfl.sim_backends.pro8000`).
"""

from __future__ import annotations

from typing import Any

from labqfl.sim_backends.pro8000 import emulate_ld_current, is_pro8000, sim_device


def attach(adapter: Any) -> None:
    """Attach every model that applies to the pyvisa-sim device behind ``adapter`` (once; idempotent)."""
    device = sim_device(adapter)
    if is_pro8000(device):
        emulate_ld_current(device)


__all__ = ["attach"]
