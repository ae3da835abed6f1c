"""Grouped cross-validation of the fracture heads on cached features (FracAtlas).

Reads the cache of ``experiments/fracture_features.py`` and, for each fold seed, splits
the images into grouped, stratified folds (near-duplicate groups never straddle a
split), fits the heads of :mod:`trainer.fracture_heads` on four folds and answers the
fifth. Reported, pooled over the held-out folds of each seed:

- ROC AUC overall and per body region (from FracAtlas's ``dataset.csv``), beside a
  flags-only baseline (region, view, hardware: no pixel) fitted in the same folds, and
  the two views alone (pooled logistic; localiser's strongest cell);
- sensitivity and specificity at the operating points (rule-out: the score above which
  95% of fractures lie; rule-in: the score above which only 5% of intact bones lie),
  chosen on the held-out answers of the first seed and checked on the others;
- localisation on outlined fractured images: the pointing game (the strongest region,
  at the map's region threshold, or else the strongest cell, touches an outline) and
  the recall of outlines at one false box per image.

    python experiments/fracture_cv.py --cache /tmp/bonefrac-cache/fracatlas-lite2-352.npz \
        --csv ../shared/datasets/fracatlas/dataset.csv [--seeds 0 1 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from trainer.fracture_heads import (
    MAP_TAPS,
    fit_fracture_heads,
    peak,
    position_features,
)
from trainer.fracture_metrics import (
    at_threshold,
    auc,
    box_recall,
    operating_points,
    pointing_game,
)

REGIONS = ("hand", "leg", "hip", "shoulder")
FLAGS = (
    "hand",
    "leg",
    "hip",
    "shoulder",
    "mixed",
    "hardware",
    "multiscan",
    "frontal",
    "lateral",
    "oblique",
)


def read_flags(csv_file: Path, paths: np.ndarray) -> np.ndarray:
    """``(N, len(FLAGS))`` 0/1 from dataset.csv, matched by file name."""
    with Path(csv_file).open(newline="", encoding="utf-8") as handle:
        rows = {row["image_id"]: row for row in csv.DictReader(handle)}
    out = np.zeros((len(paths), len(FLAGS)), np.float32)
    for i, path in enumerate(paths):
        row = rows.get(Path(str(path)).name)
        if row is not None:
            out[i] = [float(row[f]) for f in FLAGS]
    return out


def folds(labels: np.ndarray, groups: np.ndarray, seed: int, k: int = 5) -> list[Any]:
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(labels, labels, groups))


def flags_baseline(flags: np.ndarray, labels: np.ndarray, train: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    return LogisticRegression(max_iter=1000, class_weight="balanced").fit(
        flags[train], labels[train]
    )


def localisation(
    maps: np.ndarray, coverage: np.ndarray, fractured: np.ndarray, region_threshold: float
) -> dict[str, float]:
    """Pointing game and outline recall at one false box per image."""
    outlined = (fractured == 1) & (coverage.reshape(len(coverage), -1).max(axis=1) > 0)
    recall, threshold = box_recall(maps, coverage, outlined)
    return {
        "outlined_images": int(outlined.sum()),
        "pointing_game": round(
            pointing_game(maps[outlined], coverage[outlined], region_threshold), 4
        ),
        "recall_at_1_false_box_per_image": round(recall, 4),
        "threshold_at_1_false_box": threshold,
    }


def run_seed(
    seed: int,
    args: argparse.Namespace,
    arrays: dict[str, np.ndarray],
    thresholds: tuple[float, float] | None,
) -> tuple[dict[str, Any], tuple[float, float]]:
    """One fold seed: held-out answers of every fold, and their figures."""
    fractured, groups, pooled = arrays["fractured"], arrays["groups"], arrays["pooled"]
    coverage, positions, flags = arrays["coverage"], arrays["positions"], arrays.get("flags")
    started = time.monotonic()
    scores = np.zeros(len(fractured))
    pooled_only = np.zeros(len(fractured))
    peak_only = np.zeros(len(fractured))
    baseline = np.zeros(len(fractured))
    maps = np.zeros(coverage.shape, np.float32)
    for number, (train, val) in enumerate(folds(fractured, groups, seed, args.folds)):
        heads = fit_fracture_heads(
            pooled[train],
            positions[train],
            coverage[train],
            fractured[train],
            groups[train],
            seed=seed,
        )
        probabilities, cells = heads.answer(pooled[val], positions[val])
        scores[val] = probabilities
        pooled_only[val] = heads.detector.pooled_logits(pooled[val])
        peak_only[val] = peak(cells)
        maps[val] = 1.0 / (1.0 + np.exp(-cells))
        if flags is not None:
            baseline[val] = flags_baseline(flags, fractured, train).predict_proba(flags[val])[:, 1]
        print(
            f"seed {seed} fold {number}: AUC {auc(fractured[val], probabilities):.3f} "
            f"({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    if thresholds is None:
        thresholds = operating_points(fractured, scores)
    entry: dict[str, Any] = {
        "auc": round(auc(fractured, scores), 4),
        "auc_pooled_only": round(auc(fractured, pooled_only), 4),
        "auc_peak_only": round(auc(fractured, peak_only), 4),
        "rule_out": at_threshold(fractured, scores, thresholds[0]),
        "rule_in": at_threshold(fractured, scores, thresholds[1]),
        "localisation": localisation(maps, coverage, fractured, args.region_threshold),
    }
    if flags is not None:
        entry["auc_flags_only"] = round(auc(fractured, baseline), 4)
        entry["per_region"] = {}
        for index, region in enumerate(REGIONS):
            rows = flags[:, index] == 1
            entry["per_region"][region] = {
                "images": int(rows.sum()),
                "fractured": int(fractured[rows].sum()),
                "auc": round(auc(fractured[rows], scores[rows]), 4),
                "auc_flags_only": round(auc(fractured[rows], baseline[rows]), 4),
            }
    return entry, thresholds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--csv", type=Path, help="FracAtlas dataset.csv (regions and flags)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--region-threshold", type=float, default=0.5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    started = time.monotonic()
    cache = np.load(args.cache)
    fractured = cache["fractured"].astype(np.int64)
    groups = cache["groups"]
    pooled = cache["pooled"]
    coverage = cache["coverage"]
    positions = position_features({tap: cache[f"map_{tap}"] for tap in MAP_TAPS})
    paths = cache["paths"]
    flags = read_flags(args.csv, paths) if args.csv else None
    print(
        f"{len(fractured)} images, {int(fractured.sum())} fractured, "
        f"{int((coverage.reshape(len(coverage), -1).max(1) > 0).sum())} outlined; "
        f"positions {positions.shape}",
        flush=True,
    )
    report: dict[str, Any] = {"seeds": {}}
    thresholds = None
    arrays = {"fractured": fractured, "groups": groups, "pooled": pooled}
    arrays.update(coverage=coverage, positions=positions)
    if flags is not None:
        arrays["flags"] = flags
    for seed in args.seeds:
        entry, thresholds = run_seed(seed, args, arrays, thresholds)
        report["seeds"][str(seed)] = entry
        print(json.dumps({seed: entry}, indent=1), flush=True)
    aucs = [e["auc"] for e in report["seeds"].values()]
    report["auc_mean"] = round(float(np.mean(aucs)), 4)
    report["auc_sd"] = round(float(np.std(aucs)), 4)
    report["thresholds_from_seed"] = args.seeds[0]
    report["seconds"] = round(time.monotonic() - started)
    print(f"AUC {report['auc_mean']:.3f} +- {report['auc_sd']:.3f} over seeds {args.seeds}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
