"""Physical constants and the few formulas of the loop that the simulator, calibration and the
post-processing must agree on (one definition each).

Constants are the exact SI values (CODATA 2018, fixed by the 2019 SI redefinition). This module
imports nothing of labqfl, so every layer may use it.
"""

from __future__ import annotations

from typing import Protocol

#: Speed of light in vacuum [m/s] (exact, SI).
C_LIGHT = 299_792_458.0
#: Planck constant [J·s] (exact, SI).
H_PLANCK = 6.626_070_15e-34


class _Loop(Protocol):
    """What the loop-delay formula needs of :class:`labqfl.config.LoopConfig`."""

    @property
    def fiber_refractive_index(self) -> float: ...

    @property
    def segments_km(self) -> list[float]: ...


def loop_delay_ps(loop: _Loop) -> float:
    """Propagation time once round the fibre loop, n·ΣL/c [ps].

    ``loop``: the station's :class:`~labqfl.config.LoopConfig` (refractive index n, segment lengths L
    in km). A slot's photons reach the detectors this long after emission, plus cable and input
    delays (docs/simulator.md; the slotting and the delay calibration use the same value).
    """
    return loop.fiber_refractive_index * sum(loop.segments_km) * 1e3 / C_LIGHT * 1e12


def photon_energy_j(wavelength_nm: float) -> float:
    """Energy of one photon, h·c/λ [J], for a vacuum wavelength ``wavelength_nm`` [nm]."""
    if not wavelength_nm > 0:
        raise ValueError(f"wavelength must be > 0 nm, got {wavelength_nm!r}")
    return H_PLANCK * C_LIGHT / (wavelength_nm * 1e-9)
