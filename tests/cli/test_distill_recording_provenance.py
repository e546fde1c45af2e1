"""A recording's keys rest on the station that acquired it, never on a station file given at distillation
(review s35 F1).

``labqfl distill REC.h5 --config OTHER.toml`` took the keys' physical layer from OTHER: a simulated acquisition
distilled with a station file of real drivers was stored as ``hardware/csprng``, and ``keys status``, the distill
JSON and the ETSI status extension called it "computational: rests on the clients' CSPRNG …" instead of "no
physical security". Now a station file whose physical layer or client randomness differs from the recording's own
is refused with one line, before any store is opened; one that agrees is still used (and the keys say simulated).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cli_helpers import error_line, json_doc
from typer.testing import CliRunner

from labqfl.app.distill import check_recording_station
from labqfl.cli import app
from labqfl.config import load_station_config, parse_station_config
from labqfl.errors import ConfigError
from labqfl.provenance import station_physical_layer
from labqfl.serialize import dump_toml

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "station_emulated_hardware.toml"


def _hardware_like(small: dict[str, Any]) -> dict[str, Any]:
    """The small station with every instrument role on a real driver at a real resource (the emulated-hardware
    example's roles without their pyvisa-sim devices and emulators): its physical layer is "hardware". Nothing
    opens an instrument to distil a recording."""
    ex = load_station_config(EXAMPLE).model_dump(mode="json", exclude_none=True)
    h = json.loads(json.dumps(small))
    h["laser"].update({k: ex["laser"][k] for k in ("driver", "resource", "options")})
    for c, e in zip(h["clients"], ex["clients"], strict=False):
        for role in ("phase_modulator", "attenuator"):
            c[role] = {k: v for k, v in e[role].items() if k != "visa_library"}
    h["detectors"] = {k: {**v, "resource": "TCPIP0::192.0.2.10::12000::SOCKET"} for k, v in ex["detectors"].items()}
    h["time_tagger"].update(driver="SwabianTimeTagger", options={"serial": "X"})
    h["power_meter"] = {"driver": "ThorlabsPM100USB", "resource": "USB0::0x1313::0x8072::P2000001::INSTR"}
    assert station_physical_layer(parse_station_config(h, "hw.toml")) == "hardware"
    return h


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, small_station_writer: Any) -> SimpleNamespace:
    """A 0.2 s recording of the small simulated station (CSPRNG clients), a hardware-like station file of the same
    clients, and one that makes C2 seeded."""
    tmp = tmp_path_factory.mktemp("rec-provenance")
    sim = small_station_writer(tmp, name="small-rec-prov", file="sim.toml")
    r = runner.invoke(app, ["acquire", "--config", str(sim), "--duration", "0.2", "--out", str(tmp / "rec.h5"),
                            "--data-dir", str(tmp / "data"), "--json"])
    assert r.exit_code == 0, r.output
    small = load_station_config(sim).model_dump(mode="json", exclude_none=True)
    hw = tmp / "hw.toml"
    hw.write_text(dump_toml(_hardware_like(small)), encoding="utf-8")
    seeded = json.loads(json.dumps(small))
    seeded["clients"][1]["randomness"] = "seeded"
    (tmp / "seeded.toml").write_text(dump_toml(seeded), encoding="utf-8")
    return SimpleNamespace(tmp=tmp, sim=sim, hw=hw, seeded=tmp / "seeded.toml", rec=tmp / "rec.h5")


def _distill(rec: SimpleNamespace, config: Path, data: str) -> Any:
    return runner.invoke(app, ["distill", str(rec.rec), "--config", str(config), "--data-dir", str(rec.tmp / data),
                               "--out", str(rec.tmp / "runs"), "--json"])


def _copy_private_logs(rec: SimpleNamespace, data: str) -> None:
    """The CSPRNG clients' private logs of the acquisition, in a fresh data dir (a store of its own per test)."""
    import shutil

    shutil.copytree(rec.tmp / "data", rec.tmp / data)


def test_a_hardware_station_file_for_a_simulated_recording_is_refused(recorded: SimpleNamespace) -> None:
    _copy_private_logs(recorded, "d-hw")
    line = error_line(_distill(recorded, recorded.hw, "d-hw"))
    assert f"--config {recorded.hw}" in line and "physical layer is 'hardware'" in line, line
    assert f"recording {recorded.rec} was acquired on a simulated station" in line, line
    assert not (recorded.tmp / "d-hw" / "keystore").exists() or not any((recorded.tmp / "d-hw" / "keystore").iterdir())


def test_a_station_file_with_other_client_randomness_is_refused(recorded: SimpleNamespace) -> None:
    _copy_private_logs(recorded, "d-seeded")
    line = error_line(_distill(recorded, recorded.seeded, "d-seeded"))
    assert "client C2 randomness 'seeded'" in line and "holds its csprng choices" in line, line


def test_an_agreeing_station_file_is_used_and_the_keys_say_simulated(recorded: SimpleNamespace) -> None:
    _copy_private_logs(recorded, "d-sim")
    doc = json_doc(_distill(recorded, recorded.sim, "d-sim"))
    pv = doc["provenance"]
    assert pv["blocks"] and set(pv["blocks"]) == {"simulated/csprng"}, pv
    assert "no physical security" in pv["security"], pv


def test_a_simulated_station_file_for_a_hardware_recording_is_refused_too() -> None:
    """Both directions: the check compares, it does not only catch an upgrade."""
    small = load_station_config().model_dump(mode="json", exclude_none=True)
    hw_cfg = parse_station_config(_hardware_like(small), "hw.toml")
    rec = SimpleNamespace(config=hw_cfg, path=Path("bench.h5"), client_names=hw_cfg.client_names,
                          client_randomness=lambda c: "csprng")
    with pytest.raises(ConfigError, match="physical layer is 'simulated' but recording bench.h5 was acquired on a "
                                          "hardware station"):
        check_recording_station(rec, load_station_config())
    check_recording_station(rec, hw_cfg)  # its own station passes
