"""Non-neural baselines in the trainer's own grouped folds: do simple features carry signal?

A diagnostic, not a product: scikit-learn models cannot go into the exported SavedModel.
It is how we found that oriented-gradient histograms beat the from-scratch CNN on the
real radiographs (docs/experiments.md), which led to the trainer's ``gradients`` stem.

``--forest`` instead measures the settings of the trainer's ``forest`` head (trees, leaf
size, orientation bins and lobe sharpness) on the training side of each fold only, as the
trainer grows it.

Usage::

    .venv/bin/python experiments/classical_baselines.py --data DIR [--folds 5] [--seed 0]
    .venv/bin/python experiments/classical_baselines.py --data DIR --forest
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelio.images import InputSpec
from trainer import data, evaluate
from trainer.crossval import grouped_folds


def oriented_gradients(
    image: np.ndarray, cells: int = 8, bins: int = 9, sharpness: int = 4
) -> np.ndarray:
    """Soft, unsigned orientation histograms per cell, L2-normalised (as the model's stem)."""
    gy, gx = np.gradient(image)
    magnitude = np.hypot(gx, gy)
    theta = np.arctan2(gy, gx)
    centres = np.arange(bins) * np.pi / bins
    lobes = np.maximum(0, np.cos(2 * (theta[..., None] - centres))) ** sharpness
    votes = magnitude[..., None] * lobes
    side = image.shape[0] // cells
    votes = votes[: side * cells, : side * cells]
    histograms = votes.reshape(cells, side, cells, side, bins).mean(axis=(1, 3))
    histograms /= np.linalg.norm(histograms, axis=-1, keepdims=True) + 1e-3
    return histograms.ravel()


def features(images: np.ndarray) -> dict[str, np.ndarray]:
    gray = images[..., 0].astype(np.float32) / 255.0
    return {
        "pixels 32x32": gray[:, ::4, ::4].reshape(len(gray), -1),
        "intensity histogram": np.stack([np.histogram(g, 32, (0, 1))[0] / g.size for g in gray]),
        "oriented gradients 8x8 cells": np.stack([oriented_gradients(g) for g in gray]),
    }


def classifiers() -> dict[str, Callable[[], object]]:
    return {
        "logistic regression": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(C=0.01, max_iter=3000, class_weight="balanced")
        ),
        "extra trees": lambda: ExtraTreesClassifier(
            500, class_weight="balanced", n_jobs=-1, random_state=0
        ),
    }


def score(
    table: np.ndarray,
    dataset: data.LoadedDataset,
    splits: list,
    make: Callable[[], object],
    *,
    val: bool,
) -> np.ndarray:
    """Mean and spread over folds of top-1, top-3 and macro-F1, in percent (2 x 3)."""
    labels = dataset.labels
    scores = []
    for split in splits:
        train = np.concatenate([split.train, split.val]) if val else split.train
        model = make().fit(table[train], labels[train])
        metrics = evaluate.compute_metrics(
            labels[split.test], model.predict_proba(table[split.test]), dataset.classes
        )
        scores.append([metrics[k] for k in ("accuracy", "top3_accuracy", "macro_f1")])
    return np.stack([100 * np.mean(scores, axis=0), 100 * np.std(scores, axis=0)])


def report(name: str, result: np.ndarray) -> None:
    (top1, top3, f1), (s1, s3, sf) = result
    print(
        f"{name:50} top-1 {top1:4.1f} ± {s1:3.1f}  top-3 {top3:4.1f} ± {s3:3.1f}  "
        f"macro-F1 {f1:4.1f} ± {sf:3.1f}",
        flush=True,
    )


def forest_settings(dataset: data.LoadedDataset, splits: list) -> None:
    """The choices behind the trainer's forest head, grown on the training side only."""

    def trees(count: int, min_leaf: int) -> Callable[[], object]:
        return lambda: ExtraTreesClassifier(
            count, min_samples_leaf=min_leaf, class_weight="balanced", n_jobs=-1, random_state=0
        )

    gray = dataset.images[..., 0] / 255.0
    table = np.stack([oriented_gradients(g) for g in gray])
    for count, min_leaf in ((100, 1), (300, 1), (300, 3), (300, 5)):
        name = f"{count} trees, >= {min_leaf} images a leaf"
        report(name, score(table, dataset, splits, trees(count, min_leaf), val=False))
    for bins, sharpness in ((6, 4), (12, 4), (18, 4), (9, 2), (9, 8)):
        table = np.stack([oriented_gradients(g, 8, bins, sharpness) for g in gray])
        name = f"300 trees, >= 3 a leaf, {bins} bins, cos^{sharpness}"
        report(name, score(table, dataset, splits, trees(300, 3), val=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of class folders")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--forest", action="store_true", help="the forest head's settings")
    args = parser.parse_args()

    dataset = data.load(data.discover(args.data), InputSpec(128, 128, 1))
    splits = grouped_folds(dataset, args.folds, 0.15, args.seed)
    print(f"{len(dataset.labels)} images, {len(np.unique(dataset.groups))} groups")
    if args.forest:
        forest_settings(dataset, splits)
        return
    for feature_name, table in features(dataset.images).items():
        for model_name, make in classifiers().items():
            # the training side includes the validation slice: nothing stops early here
            result = score(table, dataset, splits, make, val=True)
            report(f"{feature_name:30} {model_name}", result)


if __name__ == "__main__":
    main()
