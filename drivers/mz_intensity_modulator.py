"""A client's Mach–Zehnder intensity modulator: decoy levels from a pattern-generator channel, its DC bias
held by a modulator bias controller — a **protocol-level driver that names no model**.

**Why protocol-level.** This class is for a bias controller without a driver of its own. For a
Thorlabs MBX (or the bias section of an MX transmitter) use
:class:`~labqfl.drivers.thorlabs_mbx.ThorlabsMBX`, a subclass of this one with the MBX's published
command strings (PyMeasure's ``ThorlabsMBXSeries``, Thorlabs' MX/MBX remote-control guide). Other
controllers with remote command sets exist (Optilab's BCB-4 manual lists an RS-485 command set), but
their command tables were not available to this project, and a driver built from fragments would
invent strings. This driver therefore speaks a small SCPI command set of its own, documented here and
served by the pyvisa-sim device ``labqfl/sim_backends/visa/mz_bias_controller.yaml``; for another
controller, write its ``{Vendor}{Model}`` driver from its manual with these same five functions (as
``ThorlabsMBX`` does), or put a thin adapter in front of it. Nothing below is claimed to match a
commercial unit::

    *IDN?                              identity
    BIAS:MODE NULL|PEAK|QUADP|QUADN|MAN  lock point (MAN: hold BIAS:VOLT)   BIAS:MODE? → the same words
    BIAS:VOLT <V>                      manual bias voltage [V], ±10 V        BIAS:VOLT? → V (the loop's value)
    BIAS:LOCK?                         1 while the dither loop holds its point, else 0
    OUTP 1|0                           bias output on/off                    OUTP? → 1/0
    SYST:ERR?                          error queue, <code>,"<message>"

(±10 V is the bias range typical of such controllers, e.g. the "Bias voltage −10 … 10 V" of a
published dual-channel LN bias-controller board specification.)

**Levels → decoy intensities.** With the bias locked at ``NULL`` (minimum transmission), a drive
voltage ``V`` on the RF port gives the transmission ``T(V) = sin²(π V / (2 Vπ))`` of an ideal
push–pull MZM (e.g. Saleh & Teich, *Fundamentals of Photonics*, §20.1), so intensity level ``k``
with mean photon number ``μ_k`` needs ``V_k = (2 Vπ/π) · arcsin(√(μ_k / μ_peak))``, ``μ_peak`` being
the mean photon number leaving the client at full transmission (``options.peak_mean_photons``, a
calibrated value). :attr:`drive_levels_v` lists the ``V_k``: the levels the pattern generator's
intensity code ``k + 1`` must produce through its combiner (code 0 = 0 V = extinction = dark). The
finite extinction ratio (``options.extinction_db``) puts a floor f·μ_peak, f = 10^(−ER/10), under every
level: the transmission of an MZM whose extinction is limited by arm imbalance is ``f + (1 − f)·T(V)``, which
:meth:`drive_voltage` inverts, so the floor itself is 0 V. A vacuum decoy is that floor, which
:meth:`floor_mean_photons` reports and ``levels`` refuses to undercut. On a real instrument an exact 0 is refused
too: the security analysis takes the declared level as the truth, and 0 would claim a vacuum this modulator does
not make (30 dB below μ_peak = 1 is 10⁻³ photons/pulse, half the key at the default station's operating point;
review s36 physics F1, docs/lab_setup.md): declare the floor. On a pyvisa-sim device (the emulated station,
whose light is the simulator's exact levels) an exact 0 is still accepted, played at 0 V.

The per-slot pattern does not pass through this driver: the client's frames reach the modulator
from its pattern generator (:class:`labqfl.modulation.ModulationStreamer`), so :meth:`load_pattern`
refuses with that explanation. Safe state: bias output off (and the pattern generator's own safe
state leaves every drive code at 0 = dark).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field
from pymeasure.adapters import Adapter

from labqfl.config import DriverOptions, InstrumentConfig, StationConfig
from labqfl.errors import InstrumentError
from labqfl.instruments.interfaces import IntensityModulator, ModulatorBiasController
from labqfl.instruments.settings import Rejected, Setting, rule

from ._base import IdentityPattern, Limit, MessageDriver

V_PI = (1.0, 15.0)
MODES = {"null": "NULL", "peak": "PEAK", "quad+": "QUADP", "quad-": "QUADN", "manual": "MAN"}


def _check_levels(inst: GenericMZIntensityModulator, value: object) -> list[float]:
    """The interface's rule for ``levels``, then this modulator's: at most μ_peak, and at least the extinction
    floor (an exact 0 only on a pyvisa-sim device; module docstring)."""
    vals: list[float] = IntensityModulator.levels.validator(inst, value)  # type: ignore[misc]
    floor = inst.floor_mean_photons()
    lib = str(getattr(inst.config, "visa_library", None) or "")
    for k, mu in enumerate(vals):
        if mu > inst.peak_mean_photons:
            raise Rejected(f"0 to peak_mean_photons = {inst.peak_mean_photons:g} photons/pulse", item=f"[{k}]", value=mu)
        if mu == 0 and not (lib.startswith("@sim") or lib.endswith("@sim")):
            raise Rejected(f"the extinction floor {floor:.3g} photons/pulse (μ_peak·10^(−{inst.extinction_db:g}/10)) as "
                           "the vacuum level: this modulator makes no exact vacuum, and the security analysis uses "
                           "the declared level (docs/lab_setup.md)", item=f"[{k}]", value=mu)
        if 0 < mu < floor:
            raise Rejected(f"0 (vacuum) or >= {floor:.3g} photons/pulse: {mu:g} lies below the extinction floor "
                           f"({inst.extinction_db:g} dB)", item=f"[{k}]", value=mu)
    return vals


class GenericMZIntensityModulatorOptions(DriverOptions):
    """``options`` of a :class:`GenericMZIntensityModulator` role."""

    v_pi_v: float = Field(4.0, ge=V_PI[0], le=V_PI[1], description="RF half-wave voltage of the modulator [V]")
    peak_mean_photons: float = Field(1.0, gt=0, le=1e6,
                                     description="mean photon number per pulse leaving the client at full transmission")
    extinction_db: float = Field(30.0, ge=10.0, le=60.0, description=("the modulator's guaranteed minimum extinction ratio [dB] (lowest over bias lock "
                                             "and drift, not nominal): the floor it implies is declared as a maximum"))
    bias_mode: str = Field("null", pattern=r"^(null|peak|quad\+|quad-|manual)$",
                           description="lock point written on open: null (decoys need it), peak, quad+, quad-, manual")
    #: this driver names no model: set it to your controller's *IDN? so that a wrong address is refused on open
    identity_pattern: IdentityPattern = None


class GenericMZIntensityModulator(MessageDriver, IntensityModulator, ModulatorBiasController):
    """A Mach–Zehnder intensity modulator and its bias controller (module docstring)."""

    Options = GenericMZIntensityModulatorOptions

    output_enabled = ModulatorBiasController.output_enabled.refine(
        doc="bias output on/off (modulation needs the bias locked)").scpi("OUTP?", "OUTP {value}", cast=bool,
                                                                          set_process=int)
    levels = IntensityModulator.levels.refine(doc="mean photon number per intensity level",
                                              validator=rule(_check_levels),
                                              fget=lambda s: list(s._levels), fset=lambda s, v: setattr(s, "_levels", v))
    drive_levels_v: Setting[list[float]] = Setting("V", "RF drive voltage per intensity level (code k+1)",
                                                   writable=False, fget=lambda s: [s.drive_voltage(mu) for mu in s._levels])
    mode = ModulatorBiasController.mode.scpi("BIAS:MODE?", "BIAS:MODE {value}", cast=str.upper, values=MODES)
    bias_voltage_v = ModulatorBiasController.bias_voltage_v.scpi("BIAS:VOLT?", "BIAS:VOLT {value:.4f}")
    locked = ModulatorBiasController.locked.scpi("BIAS:LOCK?", cast=bool)

    @classmethod
    def config_limits(cls, options: Any) -> dict[str, Limit]:
        return {}

    def __init__(self, name: str, config: InstrumentConfig, *, adapter: Adapter | None = None) -> None:
        o: GenericMZIntensityModulatorOptions = self.parse_options(name, config)
        self.v_pi_v = o.v_pi_v
        self.peak_mean_photons = o.peak_mean_photons
        self.extinction_db = o.extinction_db
        self._levels: list[float] = []
        super().__init__(name, config, adapter=adapter)

    def apply_operating_point(self, station: StationConfig) -> None:
        """Levels = the client's ``intensities``; the bias mode of ``options.bias_mode``; output off."""
        client = self.name.split(".")[0]
        with self.lock:
            if client in station.client_names:
                self.levels = list(station.client(client).intensities)
            self.mode = self.opts.bias_mode
            self.output_enabled = False

    # -- levels ---------------------------------------------------------------------------------------
    def floor_mean_photons(self) -> float:
        """Mean photon number at extinction (0 V drive): μ_peak · 10^(−ER/10)."""
        return self.peak_mean_photons * 10 ** (-self.extinction_db / 10)

    def drive_voltage(self, mean_photons: float) -> float:
        """RF drive [V] giving ``mean_photons`` with the bias at null: (2Vπ/π)·arcsin(√((μ/μ_peak − f)/(1 − f))),
        f = 10^(−ER/10) (the floor is 0 V)."""
        f = 10 ** (-self.extinction_db / 10)
        t = min(1.0, max(0.0, (mean_photons / self.peak_mean_photons - f) / (1.0 - f)))
        return 2 * self.v_pi_v / math.pi * math.asin(math.sqrt(t))

    def load_pattern(self, level_indices: np.ndarray) -> None:
        raise InstrumentError("this intensity modulator takes its per-slot levels from the client's pattern generator "
                              "(role '<client>.pattern_generator', streamed by labqfl.modulation.ModulationStreamer), "
                              "not from a pattern loaded here", instrument=self.name, resource=self.resource,
                              command="load_pattern")

    # -- bias controller --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        st = super().status()
        st.update(mode=self.mode, locked=self.locked, output_enabled=self.output_enabled)
        return st

    def safe_state(self) -> None:
        self.output_enabled = False
