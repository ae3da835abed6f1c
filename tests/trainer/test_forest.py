"""The extra-trees head: its tables, its Keras walk, its export, and the recipe using it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesClassifier

from trainer.cli import main
from trainer.forest import VOTE_FLOOR, ForestTables, ForestVote, tabulate

MODEL_NAME = "bone-fracture"


def predict_tables(tables: ForestTables, features: np.ndarray) -> np.ndarray:
    """The forest's mean vote, walked in numpy: the reference for the Keras layer."""
    rows = np.arange(len(features))[:, None]
    trees = np.arange(tables.trees)[None, :]
    node = np.zeros((len(features), tables.trees), np.int64)
    for _ in range(tables.depth):
        value = features[rows, tables.feature[trees, node]]
        go_left = value <= tables.threshold[trees, node]
        node = np.where(go_left, tables.left[trees, node], tables.right[trees, node])
    return tables.votes[trees, node].mean(axis=1)


@pytest.fixture(scope="module")
def forest_and_data() -> tuple[ExtraTreesClassifier, np.ndarray]:
    """Four learnable classes out of five (class 4 never appears in training)."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 12)).astype(np.float32)
    labels = (features[:, 0] > 0).astype(int) + 2 * (features[:, 1] > 0)
    forest = ExtraTreesClassifier(40, min_samples_leaf=3, random_state=0).fit(features, labels)
    unseen = rng.normal(size=(64, 12)).astype(np.float32)
    return forest, unseen


def test_tables_reproduce_scikit_learn(forest_and_data) -> None:
    forest, unseen = forest_and_data
    tables = tabulate(forest.estimators_, forest.classes_, num_classes=5)

    ours = predict_tables(tables, unseen)

    np.testing.assert_allclose(ours[:, :4], forest.predict_proba(unseen), atol=1e-6)
    np.testing.assert_array_equal(ours[:, 4], 0.0)  # a class no tree saw gets no vote
    assert tables.trees == 40
    assert tables.depth == max(tree.tree_.max_depth for tree in forest.estimators_)


def test_keras_layer_walks_the_trees_like_numpy(forest_and_data) -> None:
    forest, unseen = forest_and_data
    tables = tabulate(forest.estimators_, forest.classes_, num_classes=5)
    layer = ForestVote(tables)

    logits = np.asarray(layer(unseen))

    np.testing.assert_allclose(
        np.exp(logits) - VOTE_FLOOR, predict_tables(tables, unseen), atol=1e-5
    )
    assert np.all(np.isfinite(logits))  # the unseen class has a floor, not log(0)
    assert not layer.trainable_weights


@pytest.mark.slow  # measured 15-60 s on 2 busy cores: out of the fast lane
def test_forest_recipe_trains_exports_and_beats_chance(tmp_path: Path) -> None:
    from trainer.synth import write_dataset

    data, models = tmp_path / "synthetic", tmp_path / "models"
    write_dataset(data, per_class=40, size=128, seed=1)

    args = ["--data", str(data), "--models", str(models), "--recipe", "gradients-forest"]
    assert main(["train", *args, "--quiet"]) == 0

    metadata = json.loads((models / MODEL_NAME / "1" / "metadata.json").read_text())
    assert metadata["hyperparameters"]["head"] == "forest"
    assert metadata["training"]["method"].startswith("extra trees")
    assert "epochs" not in metadata["hyperparameters"]  # nothing here trains by epochs
    # Ten classes: chance is 10% top-1 and 30% top-3 (measured on this data: 30-40% top-1)
    assert metadata["metrics"]["test"]["accuracy"] >= 0.2
    assert metadata["metrics"]["test"]["top3_accuracy"] >= 0.45
    assert metadata["calibration"]["temperature"] > 0


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--tune"],
        ["train", "--backbone", "MobileNetV2"],
        ["crossval", "--backbone", "MobileNetV2"],
    ],
)
def test_forest_recipe_refuses_network_only_flags(
    synthetic_dataset: Path, tmp_path: Path, command: list[str], capsys
) -> None:
    where = ["--models", str(tmp_path)] if command[0] == "train" else []

    recipe = ["--recipe", "gradients-forest"]
    assert main([*command, "--data", str(synthetic_dataset), *where, *recipe]) == 2

    assert "forest" in capsys.readouterr().err
    assert not list(tmp_path.rglob("metadata.json"))


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({"stem": "conv", "head": "forest"}, "gradients stem only"),
        ({"stem": "gradients", "head": "boosted"}, "unknown head"),
    ],
)
def test_impossible_heads_are_refused_before_any_work(
    tmp_path: Path, hparams: dict[str, str], message: str
) -> None:
    from trainer.errors import TrainerError
    from trainer.model import Hyperparameters
    from trainer.train import TrainConfig, validate_config

    config = TrainConfig(tmp_path, tmp_path, hparams=Hyperparameters(**hparams))

    with pytest.raises(TrainerError, match=message):
        validate_config(config)
