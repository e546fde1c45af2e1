"""The training recipe (task defaults, SecAggConfig, bit budget, DP plan) has one definition,
:mod:`labqfl.fl.recipe`, which the application layer's TrainingSetup and the Flower spec (rebuilt
inside every node process, below labqfl.app) both call (docs/decisions/0009)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import labqfl.app
from labqfl.app import TrainingSettings, TrainingSetup
from labqfl.errors import BitBudgetError, ConfigError
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.tasks import TASK_DEFAULTS
from labqfl.nodes.runjob import flower_spec_for

ROOT = Path(labqfl.app.__file__).resolve().parents[2]
#: What only labqfl/fl/recipe.py builds or reads.
RECIPE_NAMES = {"SecAggConfig", "LocalTrainConfig", "DPConfig", "plan_dp", "TASK_DEFAULTS", "check_bit_budget"}


@pytest.mark.parametrize("path", ["labqfl/app/training.py", "labqfl/fl/flower/spec.py"])
def test_training_setup_and_flower_spec_hold_no_recipe_of_their_own(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    used = {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(tree) if isinstance(n, ast.Attribute | ast.Name)}
    used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not used & RECIPE_NAMES, f"{path} builds {sorted(used & RECIPE_NAMES)} itself; call labqfl.fl.recipe"
    assert "labqfl.fl.recipe" in {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def test_in_process_and_flower_runs_get_the_same_task_defaults_and_secagg() -> None:
    for task in TASK_DEFAULTS:
        spec = FlowerSpec.for_task(task)
        assert (spec.local_epochs, spec.lr, spec.batch_size, spec.clip) == TASK_DEFAULTS[task]
    setup = TrainingSetup(TrainingSettings(clients=4, self_masks=True, dp_epsilon=8.0, rounds=2))
    spec = flower_spec_for(setup, setup.names)
    assert spec.local() == setup.local and spec.clip == setup.secagg.clip
    assert spec.secagg() == setup.secagg and setup.secagg.dp is not None and setup.secagg.self_masks


def test_bad_settings_are_refused_alike() -> None:
    with pytest.raises(BitBudgetError, match="bit budget"):
        TrainingSetup(TrainingSettings(clients=128, q=8))  # 8 − ⌈log2 128⌉ = 1 bit per value
    with pytest.raises(ConfigError, match="task 'resnet' unknown"):
        FlowerSpec.for_task("resnet")
