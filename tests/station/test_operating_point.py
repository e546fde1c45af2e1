"""The station file's operating point is written to the instruments on open (outputs off); a role that
refuses it names itself; closing is idempotent from several threads; ramps are stepwise."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from labqfl.drivers._base import ramp_points

from labqfl.config import StationConfig, load_station_config
from labqfl.errors import StationError
from labqfl.station import Station

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "station_pyvisa_sim.toml"


def _fresh_laser_device(tmp_path: Path) -> tuple[StationConfig, Path]:
    """The example with its laser on a fresh copy of the PRO8000 device (pyvisa-sim state per file)."""
    (tmp_path / "ldc.yaml").write_text((ROOT / "sim_backends" / "visa" / "thorlabs_pro8000.yaml").read_text(encoding="utf-8"),
                                       encoding="utf-8")
    text = EXAMPLE.read_text(encoding="utf-8").replace('visa_library = "@sim:thorlabs_pro8000.yaml"',
                                                      'visa_library = "ldc.yaml@sim"')
    p = tmp_path / "st.toml"
    p.write_text(text, encoding="utf-8")
    return load_station_config(p), tmp_path


def test_operating_point_is_written_on_open_with_outputs_off(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg, base = _fresh_laser_device(tmp_path / "a")
    with Station(cfg, base_dir=base) as st:
        laser = st.laser
        # laser.power_mw = 1 mW on the L-I line 0.1 mW/mA above 10 mA: set point 20 mA, emission off
        assert laser.current_ma == pytest.approx(20.0) and laser.output_enabled is False  # type: ignore[attr-defined]
        assert laser.wavelength_nm == pytest.approx(1550.0)
        for c in cfg.clients:
            voa = st.attenuator(c.name)
            assert voa.wavelength_nm == pytest.approx(cfg.laser.wavelength_nm)  # type: ignore[union-attr]
            assert voa.shutter_closed is True  # type: ignore[union-attr]
        pm = st.phase_modulator("C1")
        assert pm.output_enabled is False and pm.gate_delay_ps == pytest.approx(cfg.clients[0].phase_modulator.gate_delay_ps)
    # without it (opening only): the device keeps what it had (the pyvisa-sim default 0 mA)
    cfg, base = _fresh_laser_device(tmp_path / "b")
    with Station(cfg, base_dir=base, apply_operating_point=False) as st:
        assert st.laser.current_ma == pytest.approx(0.0)  # type: ignore[attr-defined]


def test_a_refused_operating_point_names_the_role(tmp_path: Path) -> None:
    yaml = (ROOT / "sim_backends" / "visa" / "thorlabs_pro8000.yaml").read_text(encoding="utf-8")
    (tmp_path / "ldc.yaml").write_text(yaml.replace("          max: 0.2\n", "          max: 0.015\n"), encoding="utf-8")
    text = EXAMPLE.read_text(encoding="utf-8").replace('visa_library = "@sim:thorlabs_pro8000.yaml"',
                                                      'visa_library = "ldc.yaml@sim"')
    p = tmp_path / "st.toml"
    p.write_text(text, encoding="utf-8")
    cfg = load_station_config(p)
    with pytest.raises(StationError, match=r"^role 'laser' \(ThorlabsPRO8000 at 'GPIB0::10::INSTR'\): the station "
                                           r"file's operating point could not be applied: .*:ILD:SET"):
        Station(cfg, base_dir=tmp_path)
    st = Station(cfg, base_dir=tmp_path, tolerant=True)  # station check: recorded, the others still open
    try:
        assert st.failures["laser"].startswith("operating point not applied") and "C1.attenuator" in st
    finally:
        st.close()


def test_close_from_two_threads_closes_each_instrument_once() -> None:
    st = Station(load_station_config(EXAMPLE))
    closes: list[str] = []
    for role, inst in st.instruments.items():
        orig = inst._close

        def counted(orig=orig, role=role) -> None:  # type: ignore[no-untyped-def]
            closes.append(role)
            orig()
        inst._close = counted  # type: ignore[method-assign]
    barrier = threading.Barrier(2)

    def close() -> None:
        barrier.wait()
        st.close()

    threads = [threading.Thread(target=close) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert st.closed and sorted(closes) == sorted(st.instruments)


def test_station_opened_in_another_thread_is_not_guarded() -> None:
    out: list[Station] = []
    t = threading.Thread(target=lambda: out.append(Station(load_station_config(), guard=True)))
    t.start()
    t.join(60)
    assert out and out[0].guarded is False  # signals reach the main thread only
    out[0].close()


@pytest.mark.parametrize(("start", "target", "step", "expected"), [
    (0.0, 20.0, 5.0, [5.0, 10.0, 15.0, 20.0]),
    (20.0, 0.0, 5.0, [15.0, 10.0, 5.0, 0.0]),
    (0.0, 3.0, 2.0, [1.5, 3.0]),  # never a step above `step`: equal steps
    (7.0, 7.0, 1.0, [7.0]),
])
def test_ramp_points_are_stepwise(start: float, target: float, step: float, expected: list[float]) -> None:
    assert ramp_points(start, target, step) == pytest.approx(expected)
    with pytest.raises(ValueError, match="ramp step must be > 0"):
        ramp_points(start, target, 0.0)
