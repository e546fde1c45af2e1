"""One name per idea across the commands (docs review s31, items 2, 3, 17, 18).

Before: ``labqfl train --data-dir`` was the MNIST folder while every other command's ``--data-dir``
is the key-store data dir (train's was ``--keystore``), and train's key wait was ``--wait-for-keys``
against run's ``--wait-for-key``; the node commands took ``--station`` where every other command
takes ``--config`` (``node up --config x.toml``: "No such option"); ``labqfl calibrate`` logged
every step with a ``calibrate.py:71`` column without ``-v``; ``train --engine flower`` printed
Flower's three-line ``run_simulation`` deprecation warning on every run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.errors import LabqflError

runner = CliRunner()
COMMAND = typer.main.get_command(app)


def _params(path: list[str], argv: list[str]) -> dict[str, Any]:
    """The parsed parameters of ``labqfl PATH ARGV`` (nothing runs)."""
    cmd: click.Command = COMMAND
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    with cmd.make_context(" ".join(path), list(argv)) as ctx:
        return dict(ctx.params)


def _tiny_mnist(folder: Path) -> Path:
    from labqfl.fl.datasets.mnist import load_embedded_mnist

    folder.mkdir(parents=True, exist_ok=True)
    mn = load_embedded_mnist()
    np.savez(folder / "mnist.npz", x_train=mn.x_train[:800], y_train=mn.y_train[:800], x_test=mn.x_test[:200],
             y_test=mn.y_test[:200])
    return folder


class _Stop(LabqflError):
    pass


@pytest.fixture
def settings_seen(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """``labqfl train`` stops right after building its settings; the list gets them."""
    from labqfl.app import training

    seen: list[Any] = []

    def prepare(settings: Any) -> Any:
        seen.append(settings)
        raise _Stop("stopped by the test")

    monkeypatch.setattr(training.TrainingSetup, "prepare", staticmethod(prepare))
    return seen


def _train(argv: list[str]) -> Any:
    return runner.invoke(app, ["train", "--task", "mnist-qnn", "--clients", "2", *argv])


def test_train_data_dir_is_the_key_store_dir_and_mnist_dir_the_dataset(tmp_path: Path, settings_seen: list[Any]) -> None:
    mnist = _tiny_mnist(tmp_path / "mnist")
    r = _train(["--keys", "qkd", "--data-dir", str(tmp_path / "data"), "--mnist-dir", str(mnist)])
    assert r.exit_code == 1 and "stopped by the test" in r.output, r.output
    s = settings_seen[-1]
    assert s.keystore_dir == tmp_path / "data" and s.data_dir == mnist
    assert "warning" not in r.stderr


def test_train_data_dir_reaches_the_key_stores(tmp_path: Path) -> None:
    r = _train(["--keys", "qkd", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path)])
    assert r.exit_code == 1 and "no key store" in r.output, r.output


def test_train_data_dir_defaults_to_labqfl_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABQFL_DATA_DIR", str(tmp_path / "env"))
    r = _train(["--keys", "qkd", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "no key store" in r.output and str(tmp_path / "env") in r.output, r.output


def test_train_old_command_lines_still_work_with_a_warning(tmp_path: Path, settings_seen: list[Any]) -> None:
    mnist = _tiny_mnist(tmp_path / "mnist")
    ks = tmp_path / "ks"
    # the old spelling: --data-dir the MNIST folder, --keystore the key stores
    r = _train(["--keys", "qkd", "--keystore", str(ks), "--data-dir", str(mnist)])
    assert r.exit_code == 1 and "stopped by the test" in r.output, r.output
    assert settings_seen[-1].data_dir == mnist and settings_seen[-1].keystore_dir == ks
    assert "--keystore is deprecated" in r.stderr and "--mnist-dir" in r.stderr
    # --data-dir alone naming a folder with MNIST files and no keystore/: the MNIST folder, as before
    r = _train(["--keys", "csprng", "--data-dir", str(mnist)])
    assert settings_seen[-1].data_dir == mnist and settings_seen[-1].keystore_dir is None
    assert "read as the MNIST folder" in r.stderr
    # --keystore alone: the key-store dir
    r = _train(["--keys", "qkd", "--keystore", str(ks)])
    assert settings_seen[-1].keystore_dir == ks and settings_seen[-1].data_dir is None


def test_train_refuses_two_different_key_store_dirs(tmp_path: Path, settings_seen: list[Any]) -> None:
    r = _train(["--keys", "qkd", "--data-dir", str(tmp_path / "a"), "--keystore", str(tmp_path / "b"),
                "--mnist-dir", str(tmp_path)])
    assert r.exit_code == 1 and "two key-store data dirs" in r.output and not settings_seen


def test_train_refuses_keystore_beside_a_data_dir_that_is_a_key_store_dir(tmp_path: Path,
                                                                          settings_seen: list[Any]) -> None:
    """Review s34 L19: ``--keystore A --data-dir B`` with B a key-store data dir read B as the MNIST folder
    (its old meaning) and failed on "no mnist.npz"; it is two key-store dirs: one line."""
    (tmp_path / "b" / "keystore").mkdir(parents=True)
    r = _train(["--keys", "qkd", "--keystore", str(tmp_path / "a"), "--data-dir", str(tmp_path / "b")])
    assert r.exit_code == 1 and "two key-store data dirs" in r.output and not settings_seen
    assert "read as the MNIST folder" not in r.output


def test_train_data_dir_with_csprng_keys_says_it_is_unused(tmp_path: Path, settings_seen: list[Any]) -> None:
    r = _train(["--keys", "csprng", "--data-dir", str(tmp_path / "nothing")])
    assert settings_seen[-1].data_dir is None
    assert "used with --keys qkd only" in r.stderr and "--mnist-dir" in r.stderr


def test_train_with_mnist_dir_end_to_end(tmp_path: Path) -> None:
    mnist = _tiny_mnist(tmp_path / "mnist")
    r = _train(["--rounds", "1", "--keys", "csprng", "--mnist-dir", str(mnist), "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["key_source"] == "csprng"


def test_train_wait_for_key_has_both_spellings() -> None:
    assert _params(["train"], ["--wait-for-key", "2.5"])["wait_for_keys"] == 2.5
    assert _params(["train"], ["--wait-for-keys", "3"])["wait_for_keys"] == 3.0


NODE_COMMANDS = {
    "client": ["--name", "C1", "--data", "d", "--certs", "c"],
    "detector": ["--data", "d", "--certs", "c"],
    "optics": ["--data", "d", "--certs", "c"],
    "server": [],
    "supernode": ["--name", "C1", "--data", "d", "--certs", "c"],
    "acquire": ["--certs", "c", "--detector", "h:1", "--client", "C1=h:2", "--duration", "1"],
    "up": [],
}


@pytest.mark.parametrize("sub", sorted(NODE_COMMANDS))
@pytest.mark.parametrize("spelling", ["--config", "-c", "--station"])
def test_node_commands_take_config_and_keep_station(sub: str, spelling: str) -> None:
    assert str(_params(["node", sub], [*NODE_COMMANDS[sub], spelling, "st.toml"])["station"]) == "st.toml"


def test_node_up_config_names_the_station_file(tmp_path: Path) -> None:
    r = runner.invoke(app, ["node", "up", "--config", str(tmp_path / "x.toml")])
    assert r.exit_code == 1 and "station file not found" in r.output and "No such option" not in r.output


def test_flower_run_simulation_deprecation_is_dropped_and_nothing_else() -> None:
    from labqfl.fl.flower.engine import _drop_run_simulation_deprecation as keep

    def rec(msg: str, *args: Any) -> logging.LogRecord:
        return logging.LogRecord("flwr", logging.WARNING, __file__, 1, msg, args, None)

    assert not keep(rec("DEPRECATED FEATURE: %s\n\n  This is a deprecated feature.",
                        "The `run_simulation` function is deprecated and will be removed"))
    assert keep(rec("DEPRECATED FEATURE: %s", "Passing `enable_tf_gpu_growth=True` is deprecated."))
    assert keep(rec("Starting Flower ServerApp"))


def test_calibrate_prints_its_steps_only_with_verbose(tmp_path: Path) -> None:
    argv = ["calibrate", "detector", "--quick", "--no-plots", "--seed", "1", "--out", str(tmp_path)]
    quiet = runner.invoke(app, argv, env={"COLUMNS": "200"})
    assert quiet.exit_code == 0, quiet.output
    loud = runner.invoke(app, ["-v", *argv], env={"COLUMNS": "200"})
    assert loud.exit_code == 0, loud.output
    assert "calibrate.py:" not in quiet.stderr + loud.stderr
    assert len(loud.stderr.splitlines()) > len(quiet.stderr.splitlines()) + 2


def test_train_qkd_from_data_dir_gives_the_csprng_model(tmp_path: Path) -> None:
    """docs/experiments.md: a ``--keys qkd`` run draws its masks from the stores under ``--data-dir``,
    and the masks cancel, so its model is the csprng run's."""
    import uuid

    from labqfl.keystore import KeyStore

    per_round = 8 * 24  # q · n_params of the 4-qubit / 3-layer QNN
    bits = np.random.default_rng(0).integers(0, 2, size=2 * per_round + 10, dtype=np.uint8)
    bid = str(uuid.uuid4())
    for node in ("C1", "C2"):
        with KeyStore.for_node(node, tmp_path / "data") as st:
            st.add_block("C1-C2", bits, block_id=bid, purpose="fl")
    out = {}
    for keys in ("qkd", "csprng"):
        r = _train(["--rounds", "2", "--q", "8", "--keys", keys, "--data-dir", str(tmp_path / "data"),
                    "--out", str(tmp_path / keys), "--json"])
        assert r.exit_code == 0, r.output
        out[keys] = json.loads(r.stdout)
    assert out["qkd"]["key_source"] == "qkd" and out["qkd"]["key_bits_total"] == 2 * per_round
    assert out["qkd"]["test_accuracy"] == out["csprng"]["test_accuracy"]
    assert out["qkd"]["test_loss"] == out["csprng"]["test_loss"]
