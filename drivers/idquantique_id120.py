"""ID Quantique ID120-style single-photon detector (Si SPAD module) over serial/USB-serial.

**Command set.** ID Quantique's own remote-control manual for the ID120 was not available to us,
so this driver implements a clearly documented, SCPI-like command set modelled on the ID120's front
panel controls (enable, efficiency / excess bias, dead time, temperature, counter). Check the
commands against your unit's manual before connecting a real device; the pyvisa-sim file
``labqfl/sim_backends/visa/idquantique_id120.yaml`` implements exactly this set.

=====================  =========================================  ==========================
command                meaning                                    range / reply
=====================  =========================================  ==========================
``*IDN?``              identity                                   ``ID Quantique,ID120,<sn>,<fw>``
``SYST:ERR?``          pop one error-queue entry                  ``<code>,"<message>"``, 0 = none
``DET:ENAB <0|1>``     bias on (armed) / off                      ``DET:ENAB?`` → 0/1
``DET:EFF <pct>``      efficiency setting [%]                     integer 5 … 80
``DET:BIAS <V>``       excess bias voltage [V]                    0.00 … 20.00
``DET:DEAD <ns>``      dead time [ns]                             integer 400 … 20000
``DET:MODE <m>``       ``FREE`` (free-running) or ``GATE``        ``DET:MODE?``
``DET:GATE:WIDT <ns>`` external-gate width [ns]                   0.50 … 100.00
``DET:GATE:DEL <ps>``  gate delay after the trigger [ps]          integer 0 … 100000
``DET:TEMP?``          sensor temperature [°C]                    float
``DET:INT <ms>``       counter integration window [ms]            integer 1 … 10000
``DET:COUN?``          counts in the last completed window        integer
=====================  =========================================  ==========================

Serial line: 115200 baud, 8N1, commands end in CR LF, replies end in CR LF (``options.baud_rate``
overrides the rate; it is the only option, typed as an integer).

**Spectral range.** The ID120 is a silicon SPAD: 350 … 1000 nm (ID Quantique, ID120 datasheet,
"spectral range"). It is blind at 1550 nm, so a station whose ``laser.wavelength_nm`` lies outside
that range is refused at load. The config's ``dead_time_ns``, ``gate_width_ns`` and
``gate_delay_ps`` are checked against the ranges of the table above at load too.
"""

from __future__ import annotations

import time
from typing import Any

from pymeasure.adapters import Adapter

from labqfl.config import InstrumentConfig
from labqfl.errors import InstrumentReplyError
from labqfl.instruments.interfaces import PhotonDetector

from ._base import Limit, MessageDriver, SerialOptions, check_bool, check_range

EFF_PCT = (5, 80)
BIAS_V = (0.0, 20.0)
DEAD_NS = (400, 20000)
GATE_WIDTH_NS = (0.5, 100.0)
GATE_DELAY_PS = (0, 100_000)
INTEGRATION_MS = (1, 10_000)
SPECTRAL_RANGE_NM = (350.0, 1000.0)


class IDQuantiqueID120(MessageDriver, PhotonDetector):
    """Free-running or externally gated SPAD module (ID120-style command set, see module doc)."""

    READ_TERMINATION = "\r\n"
    WRITE_TERMINATION = "\r\n"
    SERIAL = {"baud_rate": 115200}
    Options = SerialOptions
    SPECTRAL_RANGE_NM = SPECTRAL_RANGE_NM

    @classmethod
    def config_limits(cls, options: Any) -> dict[str, Limit]:
        return {"dead_time_ns": (*DEAD_NS, "ns"), "gate_width_ns": (*GATE_WIDTH_NS, "ns"),
                "gate_delay_ps": (*GATE_DELAY_PS, "ps")}

    def __init__(self, name: str, config: InstrumentConfig, *, adapter: Adapter | None = None) -> None:
        super().__init__(name, config, adapter=adapter)

    # -- settings ------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self.link.query_bool("DET:ENAB?")

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self.link.write(f"DET:ENAB {int(check_bool('enabled', value))}")

    @property
    def efficiency(self) -> float:
        """Detection-efficiency setting as a fraction (sent as an integer percentage)."""
        return self.link.query_int("DET:EFF?") / 100.0

    @efficiency.setter
    def efficiency(self, value: float) -> None:
        v = check_range("efficiency", value, EFF_PCT[0] / 100, EFF_PCT[1] / 100)
        self.link.write(f"DET:EFF {round(v * 100):d}")

    @property
    def bias(self) -> float:
        """Excess bias voltage [V]."""
        return self.link.query_float("DET:BIAS?")

    @bias.setter
    def bias(self, value: float) -> None:
        v = check_range("bias", value, *BIAS_V, unit="V")
        self.link.write(f"DET:BIAS {v:.2f}")

    @property
    def dead_time_ns(self) -> float:
        return float(self.link.query_int("DET:DEAD?"))

    @dead_time_ns.setter
    def dead_time_ns(self, value: float) -> None:
        v = check_range("dead_time_ns", value, *DEAD_NS, unit="ns")
        self.link.write(f"DET:DEAD {round(v):d}")

    @property
    def gated(self) -> bool:
        reply = self.link.query("DET:MODE?").upper()
        if reply not in ("FREE", "GATE"):
            raise InstrumentReplyError(f"unexpected reply {reply!r}; expected FREE or GATE",
                                       instrument=self.name, resource=self.resource, command="DET:MODE?")
        return reply == "GATE"

    @gated.setter
    def gated(self, value: bool) -> None:
        self.link.write(f"DET:MODE {'GATE' if check_bool('gated', value) else 'FREE'}")

    @property
    def gate_width_ns(self) -> float:
        return self.link.query_float("DET:GATE:WIDT?")

    @gate_width_ns.setter
    def gate_width_ns(self, value: float) -> None:
        v = check_range("gate_width_ns", value, *GATE_WIDTH_NS, unit="ns")
        self.link.write(f"DET:GATE:WIDT {v:.2f}")

    @property
    def gate_delay_ps(self) -> float:
        return float(self.link.query_int("DET:GATE:DEL?"))

    @gate_delay_ps.setter
    def gate_delay_ps(self, value: float) -> None:
        v = check_range("gate_delay_ps", value, *GATE_DELAY_PS, unit="ps")
        self.link.write(f"DET:GATE:DEL {round(v):d}")

    @property
    def temperature_k(self) -> float:
        """Sensor temperature [K] (the module reports °C)."""
        return self.link.query_float("DET:TEMP?") + 273.15

    # -- measurements -----------------------------------------------------------------------------
    def count_rate_hz(self, integration_s: float = 0.1) -> float:
        """Counts per second over one counter window of ``integration_s`` seconds (1 ms … 10 s)."""
        ms = round(check_range("integration_s", integration_s, INTEGRATION_MS[0] / 1e3, INTEGRATION_MS[1] / 1e3, "s") * 1e3)
        with self.lock:
            self.link.write(f"DET:INT {ms:d}")
            time.sleep(ms / 1e3)  # the module publishes the count after the window closes
            counts = self.link.query_int("DET:COUN?")
        return counts / (ms / 1e3)

    def status(self) -> dict[str, Any]:
        st = super().status()
        st.update(enabled=self.enabled, temperature_k=round(self.temperature_k, 2))
        return st
