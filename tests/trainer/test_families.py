"""The model-family registry: every family by name, each with the same five pieces, and
what each writes into metadata.json (no TensorFlow needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trainer import families
from trainer.config import TrainConfig
from trainer.errors import TrainerError
from trainer.model import Hyperparameters


def test_every_family_is_registered_under_its_head_name() -> None:
    assert set(families.FAMILIES) == {"dense", "forest", "linear"}
    for name, family in families.FAMILIES.items():
        assert family.name == name
        for piece in ("validate", "fit", "hyperparameter_record", "training_record"):
            assert callable(getattr(family, piece)), (name, piece)


def test_an_unknown_head_names_the_registered_ones() -> None:
    with pytest.raises(TrainerError, match="unknown head 'boosted'; use dense, forest or linear"):
        families.get("boosted")


def test_each_family_records_only_what_it_was_made_with() -> None:
    config = TrainConfig(data_dir=Path("d"), models_dir=Path("m"))
    forest = Hyperparameters(stem="gradients", head="forest")
    record = families.get("forest").hyperparameter_record(config, forest, None)
    assert "epochs" not in record
    assert "batch_size" not in record
    assert record["forest_trees"] == forest.forest_trees
    dense = families.get("dense").hyperparameter_record(config, Hyperparameters(), {"x": 1})
    assert dense["epochs"] == config.epochs
    assert dense["search"] == {"x": 1}
    linear = families.get("linear").hyperparameter_record(
        config, Hyperparameters(head="linear", feature_taps=("stage4", "head")), None
    )
    assert linear["feature_taps"] == ["stage4", "head"]
    assert "epochs" not in linear


def test_importing_the_registry_loads_no_tensorflow() -> None:
    """Family modules import TensorFlow inside functions only, so the CLI's quick refusals
    stay quick (a fresh interpreter: this one may have TensorFlow from other tests)."""
    script = (
        "import sys, trainer.families, trainer.train, trainer.assemble\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
