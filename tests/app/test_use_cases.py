"""The application layer's use cases on their own: arming, distillation sessions (settings, stores
always closed), and the training setup's key source and pre-flight key check."""

from __future__ import annotations

from pathlib import Path

import pytest

from labqfl.app import (
    DistillOptions,
    DistillSession,
    TrainingSettings,
    TrainingSetup,
    arm,
    distill_settings,
    open_station,
)
from labqfl.config import load_station_config
from labqfl.errors import ConfigError, KeyStarvationError
from labqfl.instruments.interfaces import (
    IntensityModulator,
    PhaseModulator,
    PhotonDetector,
    PulsedLaser,
    VariableAttenuator,
)
from labqfl.keystore import KeyStore


def _operating(inst: object) -> bool:
    if isinstance(inst, PulsedLaser | PhaseModulator | IntensityModulator):
        return bool(inst.output_enabled)
    if isinstance(inst, PhotonDetector):
        return bool(inst.enabled)
    if isinstance(inst, VariableAttenuator):
        return not inst.shutter_closed
    return True


def test_arm_puts_every_role_in_its_operating_state() -> None:
    with open_station(load_station_config()) as station:
        mods = [r for r, i in station.instruments.items() if isinstance(i, PhaseModulator | IntensityModulator)]
        assert mods, "the default station has client modulators"
        for r in mods:  # not only the laser and D0/D1: the modulators too (the old `labqfl run` left them)
            station.instruments[r].output_enabled = False
        changed = arm(station)
        assert {f"{r}.output_enabled=True" for r in mods} <= set(changed)
        assert all(_operating(i) for i in station.instruments.values())
        assert arm(station) == []  # already armed: nothing touched


def test_distill_settings_block_rule_or_forced_size() -> None:
    cfg = load_station_config()
    settings, plan = distill_settings(cfg, DistillOptions(engine="ldpc", block_bits=20_000))
    assert plan is None and settings.block_bits == 20_000 and settings.engine == "ldpc"
    with pytest.raises(ConfigError, match=r"--duration.*; use a longer --duration"):
        distill_settings(cfg, DistillOptions(), 1e-3, what="--duration", hint="use a longer --duration")
    with pytest.raises(ConfigError, match="recording x.h5 holds no data; record longer"):
        distill_settings(cfg, DistillOptions(), 0.0, what="recording x.h5", hint="record longer")
    with pytest.raises(ConfigError, match="engine must be one of cascade, ldpc"):
        DistillOptions(engine="turbo")


def test_distill_session_closes_its_stores_whatever_happens(tmp_path: Path) -> None:
    cfg = load_station_config()
    settings, _ = distill_settings(cfg, DistillOptions(block_bits=20_000))
    with pytest.raises(RuntimeError, match="boom"), DistillSession(cfg, settings, data_dir=tmp_path) as session:
        assert set(session.stores) == set(cfg.client_names)
        with pytest.raises(ConfigError, match="not started"):
            session.push(None)
        raise RuntimeError("boom")
    assert all(st._conn is None for st in session.stores.values())


def test_training_setup_preflight_names_the_short_pair_and_closes(tmp_path: Path) -> None:
    for n in ("C1", "C2"):
        KeyStore.for_node(n, tmp_path).close()
    s = TrainingSettings(clients=2, rounds=3, keys="qkd", keystore_dir=tmp_path)
    setup = TrainingSetup(s)
    with pytest.raises(KeyStarvationError, match=r"pair C1-C2 holds 0 key bits but 3 rounds need 576"):
        setup.open_keys()  # 3 rounds × 8 bits × 24 parameters of the mnist-qnn model
    setup.close()
    assert all(st._conn is None for st in setup.key_source.stores.values())
    # without the pre-flight check the stores open; a round would fail when it is short
    with TrainingSetup(TrainingSettings(clients=2, keys="qkd", keystore_dir=tmp_path, preflight=False)) as ok:
        assert ok.open_keys().available_bits("C1-C2") == 0
    with pytest.raises(ConfigError, match=r"no key store for node\(s\) \['C3'\]"):
        TrainingSetup(TrainingSettings(clients=3, keys="qkd", keystore_dir=tmp_path)).open_keys()


def test_training_setup_task_defaults_and_self_mask_cost() -> None:
    from labqfl.fl.tasks import TASK_DEFAULTS

    ep, lr, bs, clip = TASK_DEFAULTS["mnist-qnn"]
    plain = TrainingSetup(TrainingSettings(clients=4))
    assert (plain.local.epochs, plain.local.lr, plain.local.batch_size, plain.secagg.clip) == (ep, lr, bs, clip)
    masked = TrainingSetup(TrainingSettings(clients=4, self_masks=True, lr=0.5))
    assert masked.local.lr == 0.5 and masked.share_threshold is not None
    assert masked.key_bits_per_pair_per_round == plain.key_bits_per_pair_per_round * (8 + 2 * 9) // 8
    with pytest.raises(ConfigError, match="--threshold 2 needs --self-masks"):
        TrainingSetup(TrainingSettings(threshold=2))


def test_training_setup_trains_clients_not_named_c1_to_cn() -> None:
    """A station whose clients are C1, C2 and C4 (C3 removed): the i-th client trains the i-th data
    partition under its own name, so the masks (keyed on the station's names) cover every update."""
    s = TrainingSettings(names=("C1", "C2", "C4"), rounds=1, keys="csprng")
    with TrainingSetup(s) as setup:
        data = setup.load_data()
        assert list(data.clients) == ["C1", "C2", "C4"]
        reference = TrainingSetup(TrainingSettings(clients=3))
        ref = reference.load_data()
        for name, ref_name in zip(data.clients, ref.clients, strict=True):
            assert (data.clients[name][1] == ref.clients[ref_name][1]).all()
        result = setup.run()
        assert len(result.rounds) == 1
