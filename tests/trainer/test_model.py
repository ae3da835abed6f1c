"""Model guards: the search space builds, the export is complete, deterministic and loadable."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelio import artifact
from modelio.images import InputSpec, load_array

MODEL_NAME = "bone-fracture"


def test_build_model_with_default_hyperparameters() -> None:
    import keras_tuner

    from trainer.families.cnn import build_model
    from trainer.model import DEFAULTS

    spec = InputSpec(64, 64, 1)
    model = build_model(keras_tuner.HyperParameters(), num_classes=7, spec=spec)
    assert model.input_shape == (None, 64, 64, 1)
    assert model.output_shape == (None, 7)
    assert model.get_layer("conv0_0").filters == DEFAULTS.filters
    assert not any("random" in layer.name for layer in model.layers)  # no augmentation inside
    out = np.asarray(model(np.full((2, 64, 64, 1), 128, np.float32), training=False))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def version_dir(tiny_models_dir: Path) -> Path:
    return artifact.version_dir(tiny_models_dir, MODEL_NAME, 1)


@pytest.fixture(scope="module")
def metadata(version_dir: Path) -> dict:
    return artifact.check_version(version_dir)


@pytest.fixture(scope="module")
def sample_files(synthetic_dataset: Path) -> list[Path]:
    return sorted(synthetic_dataset.rglob("Test/*.*"))[:6]


def test_export_layout_and_metadata(version_dir: Path, metadata: dict, synthetic_dataset) -> None:
    for name in ("saved_model.pb", "model.tflite", "metadata.json", "variables"):
        assert (version_dir / name).exists(), name
    for name in ("classification_report.json", "confusion_matrix.png", "training_curves.png"):
        assert (version_dir / "reports" / name).stat().st_size > 0, name
    assert metadata["name"] == MODEL_NAME
    assert metadata["version"] == 1
    assert metadata["classes"] == sorted(
        (p.name for p in synthetic_dataset.iterdir()), key=str.casefold
    )
    assert metadata["input"]["height"] == metadata["input"]["width"] == 32
    assert metadata["dataset"]["fingerprint"].startswith("sha256:")
    assert sum(metadata["dataset"]["per_class"].values()) == 80
    for key in ("accuracy", "top3_accuracy", "macro_f1"):
        assert 0.0 <= metadata["metrics"]["test"][key] <= 1.0
    libraries = set(metadata["libraries"])
    assert {"keras", "numpy", "pillow"} <= libraries
    assert libraries & {"tensorflow", "tensorflow-cpu"}
    assert not list(version_dir.parent.glob(".staging-*"))  # nothing half-written left over
    report = json.loads((version_dir / "reports/classification_report.json").read_text())
    assert report["samples"] == metadata["metrics"]["test"]["samples"]


def _inputs(files: list[Path], spec: InputSpec) -> np.ndarray:
    return np.stack([load_array(path.read_bytes(), spec) for path in files])


def test_saved_model_reloads_deterministic_and_sums_to_one(
    version_dir: Path, metadata: dict, sample_files: list[Path]
) -> None:
    import tensorflow as tf

    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    batch = tf.constant(_inputs(sample_files, InputSpec.from_dict(metadata["input"])))
    first = signature(images=batch)["probabilities"].numpy()
    second = signature(images=batch)["probabilities"].numpy()
    assert first.shape == (len(sample_files), len(metadata["classes"]))
    np.testing.assert_array_equal(first, second)  # no dropout or augmentation at inference
    np.testing.assert_allclose(first.sum(axis=1), 1.0, atol=1e-5)


def test_tflite_matches_saved_model(
    version_dir: Path, metadata: dict, sample_files: list[Path]
) -> None:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    images = _inputs(sample_files, InputSpec.from_dict(metadata["input"]))
    expected = (
        tf.saved_model.load(str(version_dir))
        .signatures["serving_default"](images=tf.constant(images))["probabilities"]
        .numpy()
    )
    runner = Interpreter(model_path=str(version_dir / "model.tflite")).get_signature_runner(
        "serving_default"
    )
    got = np.concatenate(
        [runner(images=images[i : i + 1])["probabilities"] for i in range(len(images))]
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_bytes_signature_agrees_with_shared_preprocessing(
    version_dir: Path, metadata: dict, sample_files: list[Path]
) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    encoded = []
    for path in sample_files:  # TF decodes JPEG/PNG; re-encode as PNG RGB to cover both paths
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    from_bytes = loaded.signatures["serve_bytes"](image_bytes=tf.constant(encoded))
    images = np.stack([load_array(b, InputSpec.from_dict(metadata["input"])) for b in encoded])
    from_pixels = loaded.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(
        from_bytes["probabilities"].numpy(), from_pixels["probabilities"].numpy(), atol=1e-2
    )


def test_backbone_loads_local_weights_and_refuses_bad_ones(tmp_path: Path) -> None:
    from trainer.errors import TrainerError
    from trainer.families.cnn import make_model

    spec = InputSpec(32, 32, 3)
    first = make_model(3, spec, backbone="MobileNetV2")
    network = next(layer for layer in first.layers if "mobilenet" in layer.name)
    weights = tmp_path / "mobilenet.weights.h5"
    network.save_weights(str(weights))
    second = make_model(3, spec, backbone="MobileNetV2", weights=weights)
    loaded = next(layer for layer in second.layers if "mobilenet" in layer.name)
    for a, b in zip(network.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TrainerError, match="unknown --backbone"):
        make_model(3, spec, backbone="NoSuchNet")
    with pytest.raises(TrainerError, match="3-channel"):
        make_model(3, InputSpec(32, 32, 1), backbone="MobileNetV2")
    with pytest.raises(TrainerError, match="does not exist"):
        make_model(3, spec, backbone="MobileNetV2", weights=tmp_path / "missing.h5")


def test_temperature_divides_the_logits() -> None:
    from trainer.calibration import softmax
    from trainer.families.cnn import make_model
    from trainer.model import logits_model, with_temperature

    model = make_model(4, InputSpec(32, 32, 1))
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 1)).astype(np.float32)
    logits = np.asarray(logits_model(model)(images, training=False))
    scaled = np.asarray(with_temperature(model, 2.5)(images, training=False))
    np.testing.assert_allclose(scaled, softmax(logits, 2.5), atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_bytes_signature_pixels_match_shared_preprocessing(
    sample_files: list[Path], radiograph_file: Path, channels: int
) -> None:
    """The TF decoder in serve_bytes feeds the model (almost) the same pixels as Pillow."""
    import tensorflow as tf

    from trainer.export import _bytes_to_input

    spec = InputSpec(96, 96, channels)
    decode = _bytes_to_input(spec)
    for path in [*sample_files[:3], radiograph_file]:
        data = path.read_bytes()
        from_tf = decode(tf.constant([data])).numpy()[0]
        from_pillow = load_array(data, spec)
        difference = np.abs(from_tf - from_pillow)
        assert difference.mean() < 1.0, path.name  # gray levels out of 255
        assert difference.max() < 8.0, path.name


def _edge(vertical: bool, size: int = 32) -> np.ndarray:
    """Dark left / bright right (vertical=True) or dark top / bright bottom, 0..1."""
    ramp = np.zeros((size, size), np.float32)
    ramp[:, size // 2 :] = 1.0
    image = ramp if vertical else ramp.T
    return image[np.newaxis, :, :, np.newaxis]


def test_oriented_gradients_put_an_edge_in_its_orientation_bin() -> None:
    from trainer.gradients import OrientedGradients

    layer = OrientedGradients(4)  # bins at 0, 45, 90 and 135 degrees
    across_x = np.asarray(layer(_edge(vertical=True))).sum(axis=(0, 1, 2))
    across_y = np.asarray(layer(_edge(vertical=False))).sum(axis=(0, 1, 2))

    assert int(np.argmax(across_x)) == 0  # brightness changes along x: gradient at 0 degrees
    assert int(np.argmax(across_y)) == 2  # along y: 90 degrees
    np.testing.assert_allclose(across_x[[1, 3]], 0.0, atol=1e-4)  # 45 and 135 get nothing
    assert not layer.trainable_weights
    flat = np.asarray(layer(np.full((1, 8, 8, 1), 0.5, np.float32)))
    np.testing.assert_allclose(flat, 0.0, atol=1e-5)  # no gradient, no histogram


def _export_and_answer_a_blank(model, probe: np.ndarray, tmp_path: Path) -> None:
    """Export a 3-class 64 px model; its TFLite copy must answer a flat gray image."""
    from service.runtime import TFLitePredictor
    from trainer.export import export_version

    out = np.asarray(model(probe, training=False))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    version = export_version(
        model,
        models_dir=tmp_path,
        name=MODEL_NAME,
        classes=["a", "b", "c"],
        spec=InputSpec(64, 64, 1),
        metadata={},
        probe=probe,
    )  # raises if the TFLite copy differs from the SavedModel by more than the tolerance

    blank = np.full((1, 64, 64, 1), 127.0, np.float32)  # no gradient anywhere
    answer = TFLitePredictor(version / "model.tflite").predict(blank)
    assert np.all(np.isfinite(answer))
    np.testing.assert_allclose(answer.sum(), 1.0, atol=1e-5)


def test_gradients_stem_builds_and_exports_to_a_matching_tflite(tmp_path: Path) -> None:
    from trainer.families.cnn import make_model
    from trainer.model import Hyperparameters

    model = make_model(3, InputSpec(64, 64, 1), Hyperparameters(stem="gradients"))
    assert model.get_layer("histograms").output.shape[-1] == 8 * 8 * 9
    assert not any("conv" in layer.name for layer in model.layers)
    probe = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 1)).astype(np.float32)

    _export_and_answer_a_blank(model, probe, tmp_path)


@pytest.mark.slow  # measured 15-60 s on 2 busy cores: out of the fast lane
def test_forest_head_exports_to_a_matching_tflite(tmp_path: Path) -> None:
    from trainer.families.forest import make_forest_model
    from trainer.forest import grow_forest
    from trainer.gradients import gradient_features_model
    from trainer.model import Hyperparameters

    spec, hparams = InputSpec(64, 64, 1), Hyperparameters(stem="gradients", head="forest")
    images = np.random.default_rng(1).uniform(0, 255, (30, 64, 64, 1)).astype(np.float32)
    features = np.asarray(gradient_features_model(spec, hparams)(images))
    tables = grow_forest(features, np.arange(30) % 3, 3, trees=20, min_leaf=2, seed=0)

    _export_and_answer_a_blank(make_forest_model(spec, hparams, tables), images[:4], tmp_path)


def test_gradients_stem_keeps_its_cells_when_they_do_not_divide_the_size() -> None:
    from trainer.families.cnn import make_model
    from trainer.model import Hyperparameters

    model = make_model(3, InputSpec(100, 100, 1), Hyperparameters(stem="gradients"))

    assert model.get_layer("histograms").output.shape[-1] == 8 * 8 * 9
