"""Train a classifier on a folder of radiographs and export it as the next model version.

Orchestration only: check the config, load and split the data, (tune,) let the model
family that ``hparams.head`` names fit (:mod:`trainer.families`), evaluate on the held-out
split, and export with the metadata. What a family builds and fits lives in its module.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelio import contract
from trainer import backbones, calibration, data, evaluate, export, families
from trainer.config import TrainConfig, log
from trainer.errors import TrainerError
from trainer.families import Fitted, fit
from trainer.model import Hyperparameters
from trainer.predict import predict_all

__all__ = ["TrainConfig", "TrainResult", "fit", "train", "validate_config"]


@dataclass(frozen=True)
class TrainResult:
    version_dir: Path
    metrics: dict[str, Any]
    hparams: Hyperparameters


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
    families.get(config.hparams.head).validate(config)
    if config.fracture_data is not None and config.hparams.head != "linear":
        raise TrainerError(
            "--fracture-data adds heads on a pretrained backbone's frozen features: use "
            "--recipe best"
        )
    if config.channels not in (1, 3):
        raise TrainerError("channels must be 1 (grayscale) or 3 (RGB)")
    if not config.name or "/" in config.name or config.name.startswith("."):
        raise TrainerError(f"invalid model name {config.name!r}")


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


def train(config: TrainConfig) -> TrainResult:
    """The whole run: load, split, (tune,) fit, evaluate on held-out data, export."""
    validate_config(config)
    started = time.monotonic()
    index = data.discover(config.data_dir)
    log(
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
    log(
        config,
        f"{len(dataset.labels)} readable, {len(dataset.skipped)} skipped; "
        f"{dataset.groups_merged} near-duplicates grouped; split train "
        f"{len(split.train)} / validation {len(split.val)} / test {len(split.test)}",
    )

    hparams, search = config.hparams, None
    if config.tune:
        from trainer.tune import search_hyperparameters  # noqa: PLC0415

        hparams, search = search_hyperparameters(config, dataset, split)
        log(config, f"best hyperparameters: {hparams.to_dict()}")

    family = families.get(hparams.head)
    fitted = fit(config, hparams, dataset, split)
    test_labels = dataset.labels[split.test]
    test_answers = predict_all(fitted.model, dataset.images[split.test])  # one pass, all outputs
    test_probabilities = test_answers[contract.PROBABILITIES]
    test_metrics = evaluate.compute_metrics(test_labels, test_probabilities, dataset.classes)
    val_metrics = evaluate.compute_metrics(
        dataset.labels[split.val], fitted.val_probabilities, dataset.classes
    )
    calibration_report, table_raw, table = _calibration_report(
        fitted, test_probabilities, test_labels
    )
    log(config, "held-out test split:\n" + evaluate.format_metrics(test_metrics))
    log(
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
    extra.update(fitted.sections)
    if "out_of_distribution" in extra:
        flagged = [contract.is_unfamiliar(float(s)) for s in test_answers[contract.OOD_SCORE]]
        extra["out_of_distribution"] = {
            **extra["out_of_distribution"],
            "test_flagged": round(float(np.mean(flagged)), 4),
        }
    metadata = {
        "trained_on": config.data_description or data.describe(config.data_dir, dataset),
        **extra,
        "hyperparameters": family.hyperparameter_record(config, hparams, search),
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
            **family.training_record(fitted),
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
    log(config, f"exported {version_dir}")
    return TrainResult(version_dir=version_dir, metrics=test_metrics, hparams=hparams)
