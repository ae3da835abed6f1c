"""Non-neural baselines in the trainer's own grouped folds: do simple features carry signal?

A diagnostic, not a product: scikit-learn models cannot go into the exported SavedModel.
It is how we found that oriented-gradient histograms beat the from-scratch CNN on the
real radiographs (docs/experiments.md), which led to the trainer's ``gradients`` stem.

Usage::

    .venv/bin/python experiments/classical_baselines.py --data DIR [--folds 5] [--seed 0]
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

from trainer import data, evaluate
from trainer.crossval import grouped_folds
from trainer.preprocessing import InputSpec


def oriented_gradients(image: np.ndarray, cells: int = 8, bins: int = 9) -> np.ndarray:
    """Soft, unsigned orientation histograms per cell, L2-normalised (as the model's stem)."""
    gy, gx = np.gradient(image)
    magnitude = np.hypot(gx, gy)
    theta = np.arctan2(gy, gx)
    centres = np.arange(bins) * np.pi / bins
    votes = magnitude[..., None] * np.maximum(0, np.cos(2 * (theta[..., None] - centres))) ** 4
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of class folders")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dataset = data.load(data.discover(args.data), InputSpec(128, 128, 1))
    splits = grouped_folds(dataset, args.folds, 0.15, args.seed)
    print(f"{len(dataset.labels)} images, {len(np.unique(dataset.groups))} groups")
    for feature_name, table in features(dataset.images).items():
        for model_name, make in classifiers().items():
            scores = []
            for split in splits:
                train = np.concatenate([split.train, split.val])  # no early stopping here
                model = make().fit(table[train], dataset.labels[train])
                probabilities = model.predict_proba(table[split.test])
                metrics = evaluate.compute_metrics(
                    dataset.labels[split.test], probabilities, dataset.classes
                )
                scores.append([metrics[k] for k in ("accuracy", "top3_accuracy", "macro_f1")])
            mean, std = 100 * np.mean(scores, axis=0), 100 * np.std(scores, axis=0)
            print(
                f"{feature_name:30} {model_name:20} top-1 {mean[0]:4.1f} ± {std[0]:3.1f}  "
                f"top-3 {mean[1]:4.1f} ± {std[1]:3.1f}  macro-F1 {mean[2]:4.1f} ± {std[2]:3.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
