"""Behaviour: the default 5-epoch recipe learns the synthetic radiographs (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.synth import write_dataset
from trainer.train import TrainConfig, train


@pytest.mark.slow
def test_default_recipe_is_far_above_chance_on_synthetic_data(tmp_path: Path) -> None:
    data = tmp_path / "synthetic"
    write_dataset(data, per_class=120, size=256, seed=3)
    result = train(TrainConfig(data_dir=data, models_dir=tmp_path / "models", verbose=0))
    # Chance is 10% top-1 and 30% top-3. Six measured runs of this recipe (no dropout) gave
    # 34-86% top-1; with dropout 0.3 three of six stayed at chance (docs/experiments.md).
    scores = {key: result.metrics[key] for key in ("accuracy", "top3_accuracy")}
    assert scores["accuracy"] >= 0.2, scores
    assert scores["top3_accuracy"] >= 0.45, scores
