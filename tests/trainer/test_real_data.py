"""One epoch on the real Kaggle training split, when ../shared/datasets has it (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelio import artifact
from modelio.images import InputSpec
from trainer import data
from trainer.train import TrainConfig, train


@pytest.mark.slow
def test_real_dataset_layout_and_grouping(real_dataset: Path) -> None:
    index = data.discover(real_dataset)
    assert len(index.classes) == 10
    assert "Hairline Fracture" in index.classes  # spelled as the folders spell it
    loaded = data.load(index, InputSpec(32, 32, 1))
    assert len(loaded.labels) + len(loaded.skipped) == len(index.samples)
    # Roboflow exported several copies per source image: far fewer groups than files.
    assert len(set(loaded.groups.tolist())) < 0.7 * len(loaded.labels)
    split = data.grouped_split(loaded, seed=0)
    train_groups = set(loaded.groups[split.train].tolist())
    assert not train_groups & set(loaded.groups[split.val].tolist())
    assert not train_groups & set(loaded.groups[split.test].tolist())
    # An independent look at what the model sees: no two images of different groups are
    # near-identical under any flip or turn (before thumbnail correlation joined the
    # grouping, 26 pairs were, up to a correlation of 1.0).
    pixels = loaded.images[..., 0]
    rows = data._standardised(pixels)
    closest = np.full((len(pixels), len(pixels)), -1.0, dtype=np.float32)
    for turns in range(4):
        turned = np.rot90(pixels, turns, axes=(1, 2))
        for variant in (turned, turned[:, :, ::-1]):
            closest = np.maximum(closest, rows @ data._standardised(variant).T)
    closest[loaded.groups[:, None] == loaded.groups[None, :]] = -1.0
    assert closest.max() < 0.99


@pytest.mark.slow
def test_one_epoch_on_real_radiographs(real_dataset: Path, tmp_path: Path) -> None:
    result = train(
        TrainConfig(data_dir=real_dataset, models_dir=tmp_path, epochs=1, image_size=64, verbose=0)
    )
    metadata = artifact.check_version(result.version_dir)
    assert metadata["classes"] == data.discover(real_dataset).classes
    assert metadata["dataset"]["near_duplicates_grouped"] > 100
    assert metadata["metrics"]["test"]["samples"] > 50
