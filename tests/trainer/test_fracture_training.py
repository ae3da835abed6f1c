"""Fracture detection and localisation, trained and served end to end on synthetic bones.

The synthetic generator knows where it drew each sign (``synth.write_detection_dataset``
writes its outline into a COCO file), so a model trained with ``--fracture-data`` can be
checked without any dataset: its graph gains ``fracture_probability`` and
``fracture_map`` beside the type outputs, the thresholds come from grouped cross-
validation, assemble rebuilds the same answers from head.npz, and on fresh images it
tells broken from intact bones and points at the sign.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from modelio import contract
from modelio.images import InputSpec, load_array
from modelio.regions import find_regions
from trainer import synth
from trainer.fracture_metrics import auc

pytestmark = pytest.mark.slow

SIZE = 224


@pytest.fixture(scope="module")
def fracture_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lite0 model with the type head on synthetic types and the fracture heads on
    synthetic fractured and intact bones (about a minute on 2 cores)."""
    from trainer.config import TrainConfig
    from trainer.recipes import recipe_settings
    from trainer.train import train

    root = tmp_path_factory.mktemp("fracture")
    synth.write_dataset(root / "types", per_class=10, size=160, seed=1)
    synth.write_detection_dataset(root / "detection", per_class=48, size=SIZE, seed=2)
    config = TrainConfig(
        data_dir=root / "types",
        models_dir=root / "models",
        fracture_data=root / "detection",
        feature_cache=root / "cache",
        verbose=0,
        **recipe_settings("pretrained-lite0-stages"),
    )
    return train(config).version_dir


def test_the_detection_features_are_kept_for_the_next_run(fracture_version: Path) -> None:
    (cached,) = (fracture_version.parents[2] / "cache").glob("detection-*.npz")
    with np.load(cached) as stored:
        assert stored["pooled"].shape[0] == stored["positions"].shape[0] == 96
        assert stored["positions"].dtype == np.float16


def test_the_version_declares_and_exports_the_fracture_outputs(fracture_version: Path) -> None:
    metadata = json.loads((fracture_version / "metadata.json").read_text())
    names = contract.output_names(metadata)
    assert contract.FRACTURE_PROBABILITY in names
    assert contract.FRACTURE_MAP in names
    rules = contract.FractureRules.from_metadata(metadata)
    assert rules is not None
    assert rules.rule_out.threshold <= rules.rule_in.threshold
    assert "grouped 5-fold cross-validation" in rules.measured_on
    assert set(metadata["fracture"]["cross_validation"]) >= {"roc_auc", "pointing_game"}
    assert metadata["tflite_max_diff"][contract.FRACTURE_PROBABILITY] < 1e-3


def fresh_images(seed: int, count: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """``count`` fractured then ``count`` intact bones never seen, with the signs' masks."""
    pixels, labels, masks = [], [], []
    for index in range(2 * count):
        broken = index < count
        name = synth.CLASS_NAMES[index % len(synth.CLASS_NAMES)] if broken else synth.INTACT
        image, mask = synth.render_with_sign(name, np.random.default_rng([seed, index]), SIZE)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        pixels.append(load_array(buffer.getvalue(), InputSpec(SIZE, SIZE, 1)))
        labels.append(int(broken))
        masks.append(mask)
    return np.stack(pixels), np.array(labels), masks


def test_fresh_broken_bones_score_above_intact_ones_and_the_map_points_at_the_sign(
    fracture_version: Path,
) -> None:
    from service.runtime import load_predictor

    predictor = load_predictor(fracture_version)
    images, labels, masks = fresh_images(seed=77, count=20)
    outputs = predictor.run(images)
    scores = outputs[contract.FRACTURE_PROBABILITY]
    assert auc(labels, scores) > 0.75
    hits = 0
    for fracture_map, mask in zip(outputs[contract.FRACTURE_MAP][:20], masks[:20], strict=True):
        grid = fracture_map.shape
        row, col = np.unravel_index(int(np.argmax(fracture_map)), grid)
        (region,) = find_regions(fracture_map, float(fracture_map.max()), max_regions=1)
        x0, y0, x1, y1 = (int(v) for v in region.box(grid, (SIZE, SIZE)))
        hits += bool(mask[y0:y1, x0:x1].any())
        assert region.peak == (row, col)
    # the sign covers a few percent of the image: a random peak would land on it rarely
    assert hits / 20 >= 0.5


def test_assemble_rebuilds_the_same_fracture_answers(
    fracture_version: Path, tmp_path: Path
) -> None:
    from trainer.assemble import assemble

    rebuilt = assemble(fracture_version, tmp_path / "models")
    metadata = json.loads((rebuilt / "metadata.json").read_text())
    assert (
        metadata["fracture"]
        == json.loads((fracture_version / "metadata.json").read_text())["fracture"]
    )
    assert metadata["assembled"]["reference_max_diff"] <= 1e-4


def test_a_two_class_linear_head_separates_its_classes() -> None:
    """scikit-learn answers two classes with one row of weights; copied into both softmax
    rows, the two logits were equal and every answer 50/50 (the fracture detector's pooled
    view was flat until this was found)."""
    from trainer.heads import fit_linear_head

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    features = rng.normal(size=(80, 5)) + labels[:, None] * 1.5
    head = fit_linear_head(features, labels, np.arange(80), 2, c_grid=(1.0,))
    probabilities = head.probabilities(features)[:, 1]
    assert auc(labels, probabilities) > 0.9
    assert probabilities[labels == 1].mean() > 0.7
    assert probabilities[labels == 0].mean() < 0.3
