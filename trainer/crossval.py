"""Grouped, stratified k-fold cross-validation of a training recipe (nothing is exported).

Every fold holds out whole near-duplicate groups, so a score here is a score on
radiographs the model never saw in any form. Within each fold a validation slice (also
whole groups) is carved from the training side for early stopping and the temperature.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from modelio import contract
from trainer import data, evaluate
from trainer.config import TrainConfig
from trainer.errors import TrainerError
from trainer.families import fit
from trainer.predict import predict, predict_all
from trainer.train import validate_config

SUMMARY_KEYS = ("accuracy", "top3_accuracy", "macro_f1")


def grouped_folds(
    dataset: data.LoadedDataset, folds: int, val_fraction: float, seed: int
) -> list[data.Split]:
    """One split per fold: the fold is the test side; validation is carved from the rest."""
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    everything = np.arange(len(dataset.labels))
    with warnings.catch_warnings():  # small classes: "fewer members than n_splits"
        warnings.simplefilter("ignore", UserWarning)
        fold_rows = list(splitter.split(everything, dataset.labels, dataset.groups))
    splits = []
    for number, (rest, held_out) in enumerate(fold_rows, start=1):
        train_rows, val_rows = data.carve(
            rest, dataset.labels, dataset.groups, val_fraction, seed + number
        )
        splits.append(data.Split(train=train_rows, val=val_rows, test=held_out))
    return splits


def cross_validate(config: TrainConfig, folds: int = 5) -> dict[str, Any]:
    """Train ``folds`` models on grouped folds; mean and spread of top-1, top-3, macro-F1."""
    if folds < 2:
        raise TrainerError("--folds must be at least 2")
    validate_config(config)
    started = time.monotonic()
    dataset = data.load(data.discover(config.data_dir), config.spec)
    if len(np.unique(dataset.groups)) < folds:
        raise TrainerError(f"fewer distinct images than {folds} folds")
    results = []
    for number, split in enumerate(
        grouped_folds(dataset, folds, config.val_fraction, config.seed), start=1
    ):
        held_out = split.test
        fitted = fit(config, config.hparams, dataset, split)
        images = dataset.images[held_out]
        answers = predict_all(fitted.model, images)
        probabilities = answers[contract.PROBABILITIES]
        metrics = evaluate.compute_metrics(dataset.labels[held_out], probabilities, dataset.classes)
        # Test-time augmentation, measured for free: average with the mirrored image.
        mirrored = (probabilities + predict(fitted.model, images[:, :, ::-1, :])) / 2
        tta = evaluate.compute_metrics(dataset.labels[held_out], mirrored, dataset.classes)
        row = {key: metrics[key] for key in SUMMARY_KEYS}
        row.update({f"tta_{key}": tta[key] for key in SUMMARY_KEYS})
        if contract.OOD_SCORE in answers:  # held-out radiographs the OOD check calls unfamiliar
            flagged = [contract.is_unfamiliar(float(s)) for s in answers[contract.OOD_SCORE]]
            row["ood_flagged"] = float(np.mean(flagged))
        row.update(
            fold=number,
            samples=len(held_out),
            best_epoch=fitted.best_epoch,
            temperature=round(fitted.temperature, 3),
        )
        results.append(row)
        if config.verbose:
            print(
                f"fold {number}/{folds}: top-1 {row['accuracy']:.3f}  top-3 "
                f"{row['top3_accuracy']:.3f}  macro-F1 {row['macro_f1']:.3f}",
                flush=True,
            )
    keys = [*SUMMARY_KEYS, *(f"tta_{key}" for key in SUMMARY_KEYS)]
    if "ood_flagged" in results[0]:
        keys.append("ood_flagged")
    summary = {
        key: {
            "mean": float(np.mean([r[key] for r in results])),
            "std": float(np.std([r[key] for r in results])),
        }
        for key in keys
    }
    counts = np.bincount(dataset.labels)
    return {
        "data": str(config.data_dir),
        "images": len(dataset.labels),
        "groups": len(np.unique(dataset.groups)),
        "folds": folds,
        "majority_class_rate": float(counts.max() / counts.sum()),
        "summary": summary,
        "per_fold": results,
        "seconds": round(time.monotonic() - started, 1),
    }


def format_summary(result: dict[str, Any]) -> str:
    parts = [
        f"{result['folds']}-fold grouped CV on {result['images']} images "
        f"({result['groups']} groups), {result['seconds']:.0f} s:"
    ]
    for key, label in zip(SUMMARY_KEYS, ("top-1", "top-3", "macro-F1"), strict=True):
        plain, tta = result["summary"][key], result["summary"][f"tta_{key}"]
        parts.append(
            f"  {label:9s} {plain['mean']:.3f} ± {plain['std']:.3f}   with mirror TTA "
            f"{tta['mean']:.3f} ± {tta['std']:.3f}"
        )
    if "ood_flagged" in result["summary"]:
        flagged = result["summary"]["ood_flagged"]
        parts.append(
            f"  held-out radiographs flagged as unfamiliar {flagged['mean']:.3f} ± "
            f"{flagged['std']:.3f}"
        )
    parts.append(f"  majority-class rate {result['majority_class_rate']:.3f}")
    return "\n".join(parts)
