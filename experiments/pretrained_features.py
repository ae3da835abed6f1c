"""Frozen ImageNet features + linear heads, in the trainer's grouped folds.

A diagnostic, like ``classical_baselines.py``: it measures which backbone, resolution
and feature taps to give the ``pretrained`` recipes, without exporting anything.
Features are extracted once per setting (plain and mirrored) and cached under
``--cache``; each head is then scored in grouped 5-fold CV over several fold seeds, its
regularisation chosen by an inner grouped CV on the training side of each fold only.

Usage::

    .venv/bin/python experiments/pretrained_features.py --data DIR [--seeds 0 1 2]
        [--settings lite2-352] [--only "lite2-352 stages4-7+head mirror-averaged"]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # sklearn solvers crawl on a busy machine
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelio.images import InputSpec
from trainer import data, evaluate
from trainer.backbones import feature_extractor
from trainer.crossval import grouped_folds
from trainer.heads import fit_linear_head, fit_ood
from trainer.predict import predict

SETTINGS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "lite0-224": ("efficientnet-lite0", 224, ("stage4", "stage5", "stage6", "stage7", "head")),
    "lite2-260": ("efficientnet-lite2", 260, ("stage4", "stage5", "stage6", "stage7", "head")),
    "lite2-352": ("efficientnet-lite2", 352, ("stage4", "stage5", "stage6", "stage7", "head")),
}
#: widths of the taps above, in order, for slicing the cache
TAP_WIDTHS = {
    "efficientnet-lite0": (80, 112, 192, 320, 1280),
    "efficientnet-lite2": (88, 120, 208, 352, 1280),
}


def extract(args: argparse.Namespace, setting: str) -> dict[str, np.ndarray]:
    path = Path(args.cache) / f"{setting}.npz"
    if path.is_file():
        return dict(np.load(path))
    backbone, size, taps = SETTINGS[setting]
    started = time.monotonic()
    dataset = data.load(data.discover(Path(args.data)), InputSpec(size, size, 1))
    model = feature_extractor(backbone, (size, size, 1), taps)
    plain = predict(model, dataset.images, batch_size=16)
    mirrored = predict(model, dataset.images[:, :, ::-1, :], batch_size=16)
    seconds = time.monotonic() - started
    result = {
        "plain": plain,
        "mirrored": mirrored,
        "labels": dataset.labels,
        "groups": dataset.groups,
        "seconds": np.float64(seconds),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **result)
    print(f"{setting}: {plain.shape} in {seconds:.0f} s", flush=True)
    return result


def columns(setting: str, taps: tuple[str, ...]) -> np.ndarray:
    backbone, _, all_taps = SETTINGS[setting]
    edges = np.cumsum((0, *TAP_WIDTHS[backbone]))
    return np.concatenate(
        [np.arange(edges[i], edges[i + 1]) for i, t in enumerate(all_taps) if t in taps]
    )


class _Folds:
    """Just what grouped_folds reads from a LoadedDataset."""

    def __init__(self, labels: np.ndarray, groups: np.ndarray) -> None:
        self.labels, self.groups = labels, groups


def score(
    features: np.ndarray,
    mirrored: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    classes: list[str],
    seed: int,
) -> dict[str, float]:
    rows = []
    for split in grouped_folds(_Folds(labels, groups), 5, 0.15, seed):
        train = np.concatenate([split.train, split.val])
        head = fit_linear_head(
            features[train], labels[train], groups[train], len(classes), seed=seed
        )
        p = head.probabilities(features[split.test])
        p_tta = (p + head.probabilities(mirrored[split.test])) / 2
        plain = evaluate.compute_metrics(labels[split.test], p, classes)
        tta = evaluate.compute_metrics(labels[split.test], p_tta, classes)
        ood = fit_ood(features[train], groups[train], seed)
        flagged = float(np.mean(ood.distances(features[split.test]) > ood.threshold))
        rows.append(
            (
                plain["accuracy"],
                plain["top3_accuracy"],
                tta["accuracy"],
                tta["top3_accuracy"],
                flagged,
                head.c,
            )
        )
    mean = np.mean(rows, axis=0)
    return {
        "top1": mean[0],
        "top3": mean[1],
        "top1_std": float(np.std([r[0] for r in rows])),
        "tta_top1": mean[2],
        "tta_top3": mean[3],
        "ood_rate": mean[4],
        "c": float(np.median([r[5] for r in rows])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache", default="experiments/.cache")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--only", nargs="+", help="score only these candidates (names as printed)")
    args = parser.parse_args()
    classes = data.discover(Path(args.data)).classes
    cached = {s: extract(args, s) for s in args.settings}
    candidates: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for setting, c in cached.items():
        for label, taps in (("head", ("head",)), ("stages4-7+head", SETTINGS[setting][2])):
            cols = columns(setting, taps)
            candidates[f"{setting} {label}"] = (c["plain"][:, cols], c["mirrored"][:, cols])
            # the recipe's feature_mirror: features averaged with the mirror image's, in
            # training and at inference (so "TTA" is the same answer twice)
            averaged = (c["plain"][:, cols] + c["mirrored"][:, cols]) / 2
            candidates[f"{setting} {label} mirror-averaged"] = (averaged, averaged)
    for first, second in (("lite0-224", "lite2-352"), ("lite2-260", "lite2-352")):
        if first in cached and second in cached:
            for suffix in ("", " mirror-averaged"):
                a = candidates[f"{first} stages4-7+head{suffix}"]
                b = candidates[f"{second} stages4-7+head{suffix}"]
                candidates[f"{first} + {second} stages4-7+head{suffix}"] = (
                    np.hstack([a[0], b[0]]),
                    np.hstack([a[1], b[1]]),
                )
    first = next(iter(cached.values()))
    if args.only:
        candidates = {name: candidates[name] for name in args.only}
    for name, (plain, mirrored) in candidates.items():
        for seed in args.seeds:
            started = time.monotonic()
            s = score(plain, mirrored, first["labels"], first["groups"], classes=classes, seed=seed)
            print(
                f"{name:40s} seed {seed}: top-1 {s['top1']:.3f} ± {s['top1_std']:.3f} "
                f"top-3 {s['top3']:.3f} | mirror TTA {s['tta_top1']:.3f} / {s['tta_top3']:.3f} "
                f"| held-out OOD-flagged {s['ood_rate']:.3f} | C {s['c']:.3g} "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
