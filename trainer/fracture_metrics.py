"""How well the fracture heads answer, measured on held-out answers.

Shared by training (which measures on grouped cross-validation folds of the detection
data and writes the figures and thresholds into ``metadata.json`` → ``fracture``) and by
``experiments/fracture_cv.py`` (which repeats it over several fold seeds and per body
region), so the product and the report count the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelio.regions import find_regions

#: Sensitivity the rule-out threshold keeps, and specificity the rule-in one keeps.
RULE_OUT_SENSITIVITY = 0.95
RULE_IN_SPECIFICITY = 0.95
#: Region thresholds tried when choosing the one for boxes.
REGION_THRESHOLDS = tuple(float(t) for t in np.round(np.linspace(0.05, 0.95, 19), 2))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, NaN when one class is absent."""
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def operating_points(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """``(rule_out, rule_in)``: the score above which :data:`RULE_OUT_SENSITIVITY` of
    fractures lie, and the one above which only ``1 - RULE_IN_SPECIFICITY`` of intact
    bones lie (never below the first)."""
    rule_out = float(np.quantile(scores[labels == 1], 1.0 - RULE_OUT_SENSITIVITY))
    rule_in = float(np.quantile(scores[labels == 0], RULE_IN_SPECIFICITY))
    return rule_out, max(rule_in, rule_out)


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity and specificity of ``scores >= threshold``."""
    positive = scores >= threshold
    return {
        "threshold": round(float(threshold), 4),
        "sensitivity": round(float(positive[labels == 1].mean()), 4),
        "specificity": round(float((~positive)[labels == 0].mean()), 4),
    }


def _touches(coverage: np.ndarray, region: Any) -> bool:
    r = region
    return bool(coverage[r.row0 : r.row1, r.col0 : r.col1].max() > 0)


def pointing_game(maps: np.ndarray, coverage: np.ndarray, region_threshold: float) -> float:
    """Share of outlined images whose strongest region (else strongest cell) touches an
    outline; ``maps`` and ``coverage`` are ``(N, h, w)`` of outlined images only."""
    hits = 0
    for fracture_map, cover in zip(maps, coverage, strict=True):
        regions = find_regions(fracture_map, region_threshold, max_regions=1)
        if regions:
            hits += _touches(cover, regions[0])
        else:
            row, col = np.unravel_index(int(np.argmax(fracture_map)), fracture_map.shape)
            hits += bool(cover[row, col] > 0)
    return hits / max(1, len(maps))


def box_recall(
    maps: np.ndarray, coverage: np.ndarray, outlined: np.ndarray, max_false_per_image: float = 1.0
) -> tuple[float, float]:
    """``(recall, threshold)``: the largest share of outlined images with a box touching
    an outline, over :data:`REGION_THRESHOLDS` whose boxes that touch no outline number
    at most ``max_false_per_image`` per image (all images count, intact ones too)."""
    best = (0.0, REGION_THRESHOLDS[-1])
    for threshold in REGION_THRESHOLDS:
        false_boxes = found = 0
        for i in range(len(maps)):
            hit_any = False
            for region in find_regions(maps[i], threshold):
                hit = _touches(coverage[i], region)
                false_boxes += 0 if hit else 1
                hit_any |= hit
            found += bool(outlined[i] and hit_any)
        recall = found / max(1, int(outlined.sum()))
        if false_boxes <= max_false_per_image * len(maps) and recall >= best[0]:
            best = (recall, threshold)
    return best
