"""Grouped cross-validation of the fracture heads on cached features (FracAtlas).

Reads what ``experiments/fracture_features.py`` wrote (its ``--out`` file, which names
the trainer's feature-cache file holding the features) and, for each fold seed, runs
the product's own grouped, stratified cross-validation of the fracture heads
(:func:`trainer.fracture_piece.held_out_answers`: near-duplicate groups never straddle a
fold). Reported, pooled over the held-out folds of each seed:

- ROC AUC overall and per body region (from FracAtlas's ``dataset.csv``), beside a
  flags-only baseline (region, view, hardware: no pixel) fitted in the same folds;
- sensitivity and specificity at the two operating points (rule-out: the score above
  which 95% of fractures lie; rule-in: the score below which 95% of intact bones lie),
  measured nested: each fold at thresholds chosen on the other folds' answers;
- localisation on outlined fractured images: the pointing game (the map's strongest
  cell lies on an outline) and the share found by a box at one false box per image (a
  box finds a fracture when its strongest cell lies on an outline and it covers at most
  a quarter of the image).

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

from trainer.fracture_metrics import (
    auc,
    box_recall,
    nested_operating_points,
    operating_points,
    pointing_game,
)
from trainer.fracture_piece import held_out_answers

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


def localisation(maps: np.ndarray, coverage: np.ndarray, fractured: np.ndarray) -> dict[str, Any]:
    """Pointing game and outline recall at one false box per image (the product's rules)."""
    outlined = (fractured == 1) & (coverage.reshape(len(coverage), -1).max(axis=1) > 0)
    recall, threshold = box_recall(maps, coverage, outlined)
    return {
        "outlined_images": int(outlined.sum()),
        "pointing_game": round(pointing_game(maps[outlined], coverage[outlined]), 4),
        "recall_at_1_false_box_per_image": round(recall, 4),
        "region_threshold": threshold,
    }


def run_seed(seed: int, args: argparse.Namespace, arrays: dict[str, Any]) -> dict[str, Any]:
    """One fold seed: the product's held-out answers, and their figures."""
    fractured, groups, pooled = arrays["fractured"], arrays["groups"], arrays["pooled"]
    coverage, positions, flags = arrays["coverage"], arrays["positions"], arrays.get("flags")
    held = held_out_answers(
        pooled, positions, coverage, fractured, groups, seed=seed, folds=args.folds
    )
    scores = held.scores
    baseline = np.zeros(len(fractured))
    if flags is not None:
        for fold in np.unique(held.folds):
            train, val = held.folds != fold, held.folds == fold
            model = flags_baseline(flags, fractured, np.flatnonzero(train))
            baseline[val] = model.predict_proba(flags[val])[:, 1]
    rule_out, rule_in = operating_points(fractured, scores)
    nested = nested_operating_points(fractured, scores, held.folds)
    entry: dict[str, Any] = {
        "auc": round(auc(fractured, scores), 4),
        "rule_out": {"threshold": round(rule_out, 4), **nested["rule_out"]},
        "rule_in": {"threshold": round(rule_in, 4), **nested["rule_in"]},
        "localisation": localisation(held.maps, coverage, fractured),
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
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache", type=Path, required=True, help="the --out of experiments/fracture_features.py"
    )
    parser.add_argument("--csv", type=Path, help="FracAtlas dataset.csv (regions and flags)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    started = time.monotonic()
    with np.load(args.cache) as cache:
        fractured = cache["fractured"].astype(np.int64)
        groups, coverage, paths = cache["groups"], cache["coverage"], cache["paths"]
        features = Path(str(cache["features"]))
    with np.load(features) as stored:  # the trainer's --feature-cache format
        pooled, positions = stored["pooled"], stored["positions"]
    flags = read_flags(args.csv, paths) if args.csv else None
    print(
        f"{len(fractured)} images, {int(fractured.sum())} fractured, "
        f"{int((coverage.reshape(len(coverage), -1).max(1) > 0).sum())} outlined; "
        f"positions {positions.shape}",
        flush=True,
    )
    report: dict[str, Any] = {"seeds": {}}
    arrays = {"fractured": fractured, "groups": groups, "pooled": pooled}
    arrays.update(coverage=coverage, positions=positions)
    if flags is not None:
        arrays["flags"] = flags
    for seed in args.seeds:
        entry = run_seed(seed, args, arrays)
        report["seeds"][str(seed)] = entry
        print(json.dumps({seed: entry}, indent=1), flush=True)
    aucs = [e["auc"] for e in report["seeds"].values()]
    report["auc_mean"] = round(float(np.mean(aucs)), 4)
    report["auc_sd"] = round(float(np.std(aucs)), 4)
    report["seconds"] = round(time.monotonic() - started)
    print(f"AUC {report['auc_mean']:.3f} +- {report['auc_sd']:.3f} over seeds {args.seeds}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
