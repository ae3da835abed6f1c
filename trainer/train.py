"""Train a classifier on a folder of radiographs and export it as the next model version."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelio.images import InputSpec
from trainer import backbones, calibration, data, evaluate, export
from trainer.augment import AugmentConfig, make_augmenter
from trainer.errors import TrainerError
from trainer.model import (
    DEFAULTS,
    Hyperparameters,
    gradient_features_model,
    logits_model,
    make_forest_model,
    make_model,
    make_pretrained_model,
    with_temperature,
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; the CLI fills it from flags."""

    data_dir: Path
    models_dir: Path
    name: str = "bone-fracture"
    epochs: int = 5
    image_size: int = 128
    channels: int = 1
    batch_size: int = 16  # measured: twice the updates of 32 learned faster in 5 epochs
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    patience: int = 3
    tune: bool = False
    max_trials: int = 5
    hparams: Hyperparameters = DEFAULTS
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    backbone: str | None = None
    weights: Path | None = None
    data_description: str | None = None  # metadata's "trained_on"; default: data.describe
    verbose: int = 1

    @property
    def spec(self) -> InputSpec:
        return InputSpec(self.image_size, self.image_size, self.channels)


@dataclass(frozen=True)
class Fitted:
    """A trained model with its temperature folded in, and how training went."""

    model: Any
    history: dict[str, list[float]]
    best_epoch: int
    temperature: float
    val_probabilities: np.ndarray  # the calibrated model's answers on the validation split
    # what the weight package cannot supply (``head="linear"``): written as head.npz
    head_arrays: dict[str, np.ndarray] | None = None
    out_of_distribution: dict[str, Any] | None = None  # how the OOD score was calibrated


@dataclass(frozen=True)
class TrainResult:
    version_dir: Path
    metrics: dict[str, Any]
    hparams: Hyperparameters


def _log(config: TrainConfig, message: str) -> None:
    if config.verbose:
        print(message, flush=True)


def validate_config(config: TrainConfig) -> None:
    """Refuse settings that cannot work, before any image is decoded."""
    if config.epochs < 1:
        raise TrainerError("--epochs must be at least 1")
    if not 16 <= config.image_size <= 1024:
        raise TrainerError("--image-size must be between 16 and 1024 pixels")
    for label, fraction in (("validation", config.val_fraction), ("test", config.test_fraction)):
        if not 0.02 <= fraction <= 0.5:
            raise TrainerError(f"the {label} fraction must be between 0.02 and 0.5")
    if config.tune and config.backbone:
        raise TrainerError("--tune searches the plain CNN only; drop --backbone or --tune")
    _validate_head(config)
    if config.channels not in (1, 3):
        raise TrainerError("channels must be 1 (grayscale) or 3 (RGB)")
    if not config.name or "/" in config.name or config.name.startswith("."):
        raise TrainerError(f"invalid model name {config.name!r}")


def _validate_head(config: TrainConfig) -> None:
    """The head and backbone settings; a registry backbone's weight package must be there."""
    if config.hparams.head not in ("dense", "forest", "linear"):
        raise TrainerError(f"unknown head {config.hparams.head!r}; use dense, forest or linear")
    if config.hparams.head == "forest" and config.hparams.stem != "gradients":
        raise TrainerError("a forest head grows on the gradients stem only")
    if config.hparams.head == "forest" and (config.tune or config.backbone):
        raise TrainerError(
            "this recipe grows a forest on fixed features: it takes no --tune or --backbone"
        )
    if config.hparams.head == "linear" and (
        config.tune or config.weights or not backbones.is_registered(config.backbone)
    ):
        raise TrainerError(
            "a linear head is fitted on a pretrained backbone's frozen features: it needs "
            f"--backbone {' or '.join(backbones.BACKBONES)} and takes no --tune or --weights"
        )
    if backbones.is_registered(config.backbone):
        if config.weights is not None:
            raise TrainerError(f"{config.backbone} brings its own weights: drop --weights")
        backbones.check_available(str(config.backbone))
    elif config.backbone:
        _validate_keras_backbone(config)


def _validate_keras_backbone(config: TrainConfig) -> None:
    """A ``keras.applications`` name and its weights file, checked before any decoding."""
    import keras  # noqa: PLC0415

    if not callable(getattr(keras.applications, str(config.backbone), None)):
        raise TrainerError(
            f"unknown --backbone {config.backbone!r}: use {' or '.join(backbones.BACKBONES)}, "
            "or a keras.applications name such as MobileNetV2"
        )
    if config.weights is not None and not Path(config.weights).is_file():
        raise TrainerError(f"--weights file {config.weights} does not exist")


def make_datasets(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    *,
    weights: np.ndarray | None = None,
    augment: AugmentConfig | None = None,
    seed: int = 0,
) -> Any:
    """A batched tf.data pipeline of (pixels, one-hot, sample weight); augmented if asked."""
    import tensorflow as tf  # noqa: PLC0415

    one_hot = np.eye(num_classes, dtype=np.float32)[labels]
    sample_weights = np.ones(len(labels), np.float32) if weights is None else weights
    dataset = tf.data.Dataset.from_tensor_slices((images, one_hot, sample_weights))
    if augment is not None:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment is not None and augment.enabled:
        augmenter = make_augmenter(augment, seed)

        def apply(x: Any, y: Any, w: Any) -> tuple[Any, Any, Any]:
            return tf.clip_by_value(augmenter(x, training=True), 0.0, 255.0), y, w

        dataset = dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def balanced_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-sample weights that give every class the same total weight (imbalance)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    per_class = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return per_class[labels].astype(np.float32)


def training_datasets(
    config: TrainConfig, dataset: data.LoadedDataset, split: data.Split
) -> tuple[Any, Any]:
    """The augmented, class-balanced training pipeline and the plain validation one."""
    num_classes = len(dataset.classes)
    train_labels = dataset.labels[split.train]
    train_ds = make_datasets(
        dataset.images[split.train],
        train_labels,
        num_classes,
        config.batch_size,
        weights=balanced_weights(train_labels, num_classes),
        augment=config.augment,
        seed=config.seed,
    )
    val_ds = make_datasets(
        dataset.images[split.val], dataset.labels[split.val], num_classes, config.batch_size
    )
    return train_ds, val_ds


#: Pixels per batch when predicting: a pretrained backbone at 352 px holds several
#: 176x176x144 float maps per image (twice with mirror averaging), and 64 images at once
#: took over 20 GB. About a million pixels per batch keeps it near 1-2 GB.
PIXELS_PER_BATCH = 1_000_000


def predict_all(
    model: Any, images: np.ndarray, batch_size: int | None = None
) -> dict[str, np.ndarray]:
    """Every output of a Keras model by name, without ``model.predict``'s per-call overhead.

    A single-output model's answer is named ``probabilities``. The default batch size
    holds about :data:`PIXELS_PER_BATCH` pixels (64 images at most).
    """
    if batch_size is None:
        batch_size = max(1, min(64, PIXELS_PER_BATCH // max(1, images.shape[1] * images.shape[2])))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch_size):
        for name, value in export.named_outputs(model, images[start : start + batch_size]).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def predict(model: Any, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """A Keras model's probabilities (see :func:`predict_all`)."""
    if len(images) == 0:
        return np.zeros((0, 0), np.float32)
    return predict_all(model, images, batch_size)["probabilities"]


def _keep_best_callback() -> Any:
    import keras  # noqa: PLC0415

    class KeepBest(keras.callbacks.Callback):
        """Remember the weights of the epoch with the lowest validation loss."""

        def __init__(self) -> None:
            super().__init__()
            self.best_loss = float("inf")
            self.best_epoch = 0
            self.best_weights: list[Any] | None = None

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            loss = (logs or {}).get("val_loss", float("inf"))
            if loss < self.best_loss:
                self.best_loss, self.best_epoch = loss, epoch + 1
                self.best_weights = self.model.get_weights()

        def on_train_end(self, logs: dict[str, float] | None = None) -> None:
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return KeepBest()


def fit(
    config: TrainConfig,
    hparams: Hyperparameters,
    dataset: data.LoadedDataset,
    split: data.Split,
) -> Fitted:
    """Train one model (best epoch's weights kept), then fit its temperature on validation."""
    import keras  # noqa: PLC0415

    if hparams.head == "forest":
        return _grow(config, hparams, dataset, split)
    if hparams.head == "linear":
        return _fit_linear(config, hparams, dataset, split)
    keras.utils.set_random_seed(config.seed)
    num_classes = len(dataset.classes)
    train_ds, val_ds = training_datasets(config, dataset, split)
    model = make_model(
        num_classes, config.spec, hparams, backbone=config.backbone, weights=config.weights
    )
    keep_best = _keep_best_callback()
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        callbacks=[
            keep_best,
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience),
        ],
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=config.verbose,
    )
    return _with_fitted_temperature(
        model,
        dataset,
        split,
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        best_epoch=keep_best.best_epoch,
    )


def _grow(
    config: TrainConfig,
    hparams: Hyperparameters,
    dataset: data.LoadedDataset,
    split: data.Split,
) -> Fitted:
    """The ``forest`` head: trees grown on the training split's fixed gradient features.

    No epochs and no early stopping; the validation split is left for the temperature.
    """
    from trainer.forest import grow_forest  # noqa: PLC0415

    features = predict(gradient_features_model(config.spec, hparams), dataset.images[split.train])
    tables = grow_forest(
        features,
        dataset.labels[split.train],
        len(dataset.classes),
        trees=hparams.forest_trees,
        min_leaf=hparams.forest_min_leaf,
        seed=config.seed,
    )
    _log(
        config, f"grew {tables.trees} trees (depth up to {tables.depth}) on {len(features)} images"
    )
    return _with_fitted_temperature(
        make_forest_model(config.spec, hparams, tables), dataset, split, history={}, best_epoch=0
    )


#: Frozen-backbone features of every image of a loaded dataset, kept for the folds of a
#: cross-validation: a pure function of (images, backbone, taps), and the costly part.
_FEATURE_CACHE: dict[tuple[Any, ...], np.ndarray] = {}


def pretrained_features(
    backbone: str, hparams: Hyperparameters, dataset: data.LoadedDataset
) -> np.ndarray:
    """Pooled features of every image in ``dataset`` (cached for one dataset at a time)."""
    taps, mirror = tuple(hparams.feature_taps), hparams.feature_mirror
    key = (dataset.fingerprint, backbone, taps, mirror, tuple(dataset.images.shape))
    if key not in _FEATURE_CACHE:
        _FEATURE_CACHE.clear()
        extractor = backbones.feature_extractor(
            backbone, dataset.images.shape[1:], taps, mirror=mirror
        )
        _FEATURE_CACHE[key] = predict(extractor, dataset.images)
    return _FEATURE_CACHE[key]


def _fit_linear(
    config: TrainConfig,
    hparams: Hyperparameters,
    dataset: data.LoadedDataset,
    split: data.Split,
) -> Fitted:
    """The ``linear`` head: logistic regression and an OOD model on frozen features.

    Both are fitted on the training split (the regularisation by grouped inner CV there);
    the validation split is left for the temperature, folded into the head's weights.
    """
    from trainer.heads import OOD_QUANTILE, fit_linear_head, fit_ood  # noqa: PLC0415

    backbone = str(config.backbone)
    features = pretrained_features(backbone, hparams, dataset)
    train, val = split.train, split.val
    labels, groups = dataset.labels, dataset.groups
    head = fit_linear_head(
        features[train], labels[train], groups[train], len(dataset.classes), seed=config.seed
    )
    ood = fit_ood(features[train], groups[train], config.seed)
    val_logits = head.logits(features[val])
    temperature = calibration.fit_temperature(val_logits, labels[val])
    model = make_pretrained_model(
        config.spec, backbone, hparams, head, ood=ood, temperature=temperature
    )
    val_flagged = float(np.mean(ood.distances(features[val]) > ood.threshold))
    _log(
        config,
        f"fitted a linear head (C={head.c}) on {len(train)} images' {backbone} features; "
        f"OOD threshold flags {val_flagged:.1%} of the validation radiographs",
    )
    arrays = {f"head_{k}": v for k, v in head.__dict__.items() if isinstance(v, np.ndarray)}
    arrays.update({f"ood_{k}": np.asarray(v) for k, v in ood.__dict__.items()})
    arrays.update(temperature=np.asarray(temperature), head_c=np.asarray(head.c))
    # what the rebuilt model must answer on fixed images (trainer.assemble checks it)
    from trainer.assemble import reference_images  # noqa: PLC0415

    reference = predict_all(model, reference_images(config.spec))
    arrays.update({f"reference_{k}": v for k, v in reference.items()})
    return Fitted(
        model=model,
        history={},
        best_epoch=0,
        temperature=temperature,
        val_probabilities=calibration.softmax(val_logits, temperature),
        head_arrays=arrays,
        out_of_distribution={
            "output": "ood_score",
            "warn_above": 1.0,
            "method": "Mahalanobis distance of the backbone features in their top "
            f"{ood.components.shape[1]} principal components plus the residual, over a "
            f"threshold: the {OOD_QUANTILE:.0%} quantile of held-out training radiographs "
            "(grouped inner folds)",
            "threshold": round(float(ood.threshold), 6),
            "validation_flagged": round(val_flagged, 4),
        },
    )


def _with_fitted_temperature(
    model: Any,
    dataset: data.LoadedDataset,
    split: data.Split,
    *,
    history: dict[str, list[float]],
    best_epoch: int,
) -> Fitted:
    """Fit the temperature on the validation split and fold it into the model."""
    val_logits = predict(logits_model(model), dataset.images[split.val])
    temperature = calibration.fit_temperature(val_logits, dataset.labels[split.val])
    return Fitted(
        model=with_temperature(model, temperature),
        history=history,
        best_epoch=best_epoch,
        temperature=temperature,
        val_probabilities=calibration.softmax(val_logits, temperature),
    )


def _calibration_report(
    fitted: Fitted, calibrated: np.ndarray, labels: np.ndarray
) -> tuple[dict[str, Any], list[dict[str, float]], list[dict[str, float]]]:
    """ECE on held-out answers before and after temperature scaling, with the bin tables."""
    raw = calibration.softmax(np.log(np.clip(calibrated, 1e-30, 1.0)) * fitted.temperature)
    ece_raw, table_raw = calibration.reliability(raw, labels)
    ece, table = calibration.reliability(calibrated, labels)
    report = {
        "method": "temperature scaling fitted on the validation split (NLL)",
        "temperature": round(fitted.temperature, 4),
        "test_ece_before": round(ece_raw, 4),
        "test_ece_after": round(ece, 4),
    }
    return report, table_raw, table


def _hyperparameter_record(
    config: TrainConfig, hparams: Hyperparameters, search: dict[str, Any] | None
) -> dict[str, Any]:
    """What metadata.json says the model was made with; a forest has no epochs or batches."""
    common = {"image_size": config.image_size, "seed": config.seed}
    if hparams.head == "linear":
        return {
            "head": "linear",
            "backbone": config.backbone,
            "feature_taps": list(hparams.feature_taps),
            "feature_mirror": hparams.feature_mirror,
            **common,
            "regularisation": "C of a logistic regression, by grouped inner 4-fold CV",
            "class_balancing": "class_weight='balanced'",
        }
    if hparams.head == "forest":
        keep = (
            "stem",
            "head",
            "gradient_cells",
            "orientation_bins",
            "forest_trees",
            "forest_min_leaf",
        )
        return {
            **{key: value for key, value in hparams.to_dict().items() if key in keep},
            **common,
            "class_balancing": "class_weight='balanced' in every tree",
        }
    return {
        **hparams.to_dict(),
        **common,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "augmentation": config.augment.__dict__,
        "backbone": config.backbone,
        "backbone_weights": str(config.weights) if config.weights else None,
        "class_balancing": "per-sample weights, equal total weight per class",
        **({"search": search} if search else {}),
    }


def _training_record(hparams: Hyperparameters, fitted: Fitted) -> dict[str, Any]:
    if hparams.head == "linear":
        return {
            "method": "frozen ImageNet features; logistic regression fitted by scikit-learn "
            "on the training split",
            "regularisation_c": float(fitted.head_arrays["head_c"]) if fitted.head_arrays else None,
        }
    if hparams.head == "forest":
        return {"method": "extra trees grown by scikit-learn on the training split's features"}
    return {
        "method": "Adam, best epoch by validation loss",
        "epochs_run": len(fitted.history.get("loss", [])),
        "best_epoch": fitted.best_epoch,
    }


def train(config: TrainConfig) -> TrainResult:
    """The whole run: load, split, (tune,) fit, evaluate on held-out data, export."""
    validate_config(config)
    started = time.monotonic()
    index = data.discover(config.data_dir)
    _log(
        config,
        f"found {len(index.samples)} images in {len(index.classes)} classes "
        f"under {config.data_dir}; decoding at {config.image_size} px",
    )
    dataset = data.load(index, config.spec)
    split = data.grouped_split(dataset, config.val_fraction, config.test_fraction, config.seed)
    for side, rows in (("train", split.train), ("validation", split.val), ("test", split.test)):
        if len(rows) == 0:
            raise TrainerError(f"the {side} split is empty; add images to every class")
    # Only now, with the data known to be usable, and still before the long part; a run
    # that fails after this removes the model folder again if it made it and it is empty.
    model_root = Path(config.models_dir) / config.name
    made_folder = not model_root.exists()
    export.ensure_writable(config.models_dir, config.name)
    try:
        return _fit_and_export(config, dataset, split, started)
    except BaseException:
        if made_folder:
            with contextlib.suppress(OSError):
                model_root.rmdir()  # only succeeds when nothing was written there
        raise


def _fit_and_export(
    config: TrainConfig, dataset: data.LoadedDataset, split: data.Split, started: float
) -> TrainResult:
    """Everything after the data is loaded and split: (tune,) fit, evaluate, export."""
    _log(
        config,
        f"{len(dataset.labels)} readable, {len(dataset.skipped)} skipped; "
        f"{dataset.groups_merged} near-duplicates grouped; split train "
        f"{len(split.train)} / validation {len(split.val)} / test {len(split.test)}",
    )

    hparams, search = config.hparams, None
    if config.tune:
        from trainer.tune import search_hyperparameters  # noqa: PLC0415

        hparams, search = search_hyperparameters(config, dataset, split)
        _log(config, f"best hyperparameters: {hparams.to_dict()}")

    fitted = fit(config, hparams, dataset, split)
    test_labels = dataset.labels[split.test]
    test_answers = predict_all(fitted.model, dataset.images[split.test])  # one pass, all outputs
    test_probabilities = test_answers["probabilities"]
    test_metrics = evaluate.compute_metrics(test_labels, test_probabilities, dataset.classes)
    val_metrics = evaluate.compute_metrics(
        dataset.labels[split.val], fitted.val_probabilities, dataset.classes
    )
    calibration_report, table_raw, table = _calibration_report(
        fitted, test_probabilities, test_labels
    )
    _log(config, "held-out test split:\n" + evaluate.format_metrics(test_metrics))
    _log(
        config,
        f"calibration: temperature {fitted.temperature:.2f}, test ECE "
        f"{calibration_report['test_ece_before']:.3f} -> "
        f"{calibration_report['test_ece_after']:.3f}",
    )

    def write_reports(out: Path) -> None:
        evaluate.write_reports(out, test_metrics, dataset.classes, fitted.history)
        calibration.plot_reliability(
            out / calibration.RELIABILITY_DIAGRAM,
            table_raw,
            table,
            f"Reliability on the test split (T={fitted.temperature:.2f})",
        )

    summary = {
        key: test_metrics[key] for key in ("samples", "accuracy", "top3_accuracy", "macro_f1")
    }
    extra: dict[str, Any] = {}
    if backbones.is_registered(config.backbone):
        extra["backbone"] = backbones.BACKBONES[str(config.backbone)].describe()
    if fitted.out_of_distribution is not None:
        extra["out_of_distribution"] = {
            **fitted.out_of_distribution,
            "test_flagged": round(float(np.mean(test_answers["ood_score"] > 1.0)), 4),
        }
    metadata = {
        "trained_on": config.data_description or data.describe(config.data_dir, dataset),
        **extra,
        "hyperparameters": _hyperparameter_record(config, hparams, search),
        "calibration": calibration_report,
        "metrics": {
            "test": summary,
            "validation": {key: val_metrics[key] for key in summary},
            "split": "grouped by near-duplicate (Roboflow stem, identical bytes, 256-bit "
            "dHash, thumbnail and detail correlation, under flips/turns); stratified by class",
        },
        "dataset": {
            # the folder's name only: a path on the training machine means nothing elsewhere
            "source": Path(config.data_dir).resolve().name,
            "fingerprint": f"sha256:{dataset.fingerprint}",
            "per_class": data.class_counts(dataset.labels, dataset.classes),
            "split_sizes": {
                "train": len(split.train),
                "validation": len(split.val),
                "test": len(split.test),
            },
            "near_duplicates_grouped": dataset.groups_merged,
            "held_out_images_moved_to_train": split.moved_to_train,
            "skipped_files": [{"path": p, "reason": r} for p, r in dataset.skipped],
        },
        "training": {
            **_training_record(hparams, fitted),
            "seconds": round(time.monotonic() - started, 1),
        },
    }
    version_dir = export.export_version(
        fitted.model,
        models_dir=config.models_dir,
        name=config.name,
        classes=dataset.classes,
        spec=config.spec,
        metadata=metadata,
        probe=dataset.images[split.test[:4]],
        write_reports=write_reports,
        head_arrays=fitted.head_arrays,
    )
    _log(config, f"exported {version_dir}")
    return TrainResult(version_dir=version_dir, metrics=test_metrics, hparams=hparams)
