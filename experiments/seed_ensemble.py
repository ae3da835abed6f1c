"""Small seed ensembles of a recipe in the trainer's grouped folds, with mirror TTA.

Each fold trains ``--members`` models that differ only in their seed and averages their
probabilities (each image also scored mirrored). It reports the score of the first 1, 2,
... members, so the gain per extra member is visible. Nothing is exported.

Usage::

    .venv/bin/python experiments/seed_ensemble.py --data DIR --recipe NAME [--members 5]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import data, evaluate
from trainer.config import TrainConfig
from trainer.crossval import grouped_folds
from trainer.families import fit
from trainer.predict import predict
from trainer.recipes import recipe_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of class folders")
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()

    config = TrainConfig(
        data_dir=args.data, models_dir=Path("unused"), verbose=0, **recipe_settings(args.recipe)
    )
    dataset = data.load(data.discover(config.data_dir), config.spec)
    scores: dict[int, list[list[float]]] = {k: [] for k in range(1, args.members + 1)}
    for split in grouped_folds(dataset, args.folds, config.val_fraction, config.seed):
        images, labels = dataset.images[split.test], dataset.labels[split.test]
        answers = []
        for seed in range(args.members):
            model = fit(replace(config, seed=seed), config.hparams, dataset, split).model
            answers.append((predict(model, images) + predict(model, images[:, :, ::-1])) / 2)
            metrics = evaluate.compute_metrics(labels, np.mean(answers, axis=0), dataset.classes)
            scores[seed + 1].append([metrics[k] for k in ("accuracy", "top3_accuracy", "macro_f1")])
    for members, rows in scores.items():
        mean, std = 100 * np.mean(rows, axis=0), 100 * np.std(rows, axis=0)
        print(
            f"{args.recipe}, {members} member(s) + mirror TTA: top-1 {mean[0]:.1f} ± {std[0]:.1f}"
            f"  top-3 {mean[1]:.1f} ± {std[1]:.1f}  macro-F1 {mean[2]:.1f} ± {std[2]:.1f}"
        )


if __name__ == "__main__":
    main()
