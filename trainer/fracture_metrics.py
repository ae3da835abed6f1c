"""How well the fracture heads answer, measured on held-out answers.

Shared by training (which measures on grouped cross-validation folds of the detection
data and writes the figures and thresholds into ``metadata.json`` → ``fracture``) and by
``experiments/fracture_cv.py`` (which repeats it over several fold seeds and per body
region), so the product and the report count the same way.
"""

from __future__ import annotations

import numpy as np

from modelio.regions import Region, find_regions

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


#: A region larger than this share of the grid is never a hit: a map that lights up
#: everywhere has not found anything, whatever its box happens to cover.
MAX_HIT_AREA = 0.25


def _hit(coverage: np.ndarray, region: Region) -> bool:
    """A region finds a fracture when its strongest cell lies on an outline and it is not
    a blanket over much of the image."""
    area = (region.row1 - region.row0) * (region.col1 - region.col0)
    return area <= MAX_HIT_AREA * coverage.size and bool(coverage[region.peak] > 0)


def pointing_game(maps: np.ndarray, coverage: np.ndarray) -> float:
    """Share of outlined images whose map's strongest cell lies on an outline; ``maps``
    and ``coverage`` are ``(N, h, w)`` of outlined images only. A flat map points at its
    first cell, a random one at random: both score about the outlines' share of cells."""
    hits = 0
    for fracture_map, cover in zip(maps, coverage, strict=True):
        peak = np.unravel_index(int(np.argmax(fracture_map)), fracture_map.shape)
        hits += bool(cover[peak] > 0)
    return hits / max(1, len(maps))


def box_recall(
    maps: np.ndarray, coverage: np.ndarray, outlined: np.ndarray, max_false_per_image: float = 1.0
) -> tuple[float, float]:
    """``(recall, threshold)``: the largest share of outlined images with a box that finds
    the fracture (:func:`_hit`), over :data:`REGION_THRESHOLDS` whose boxes that find none
    number at most ``max_false_per_image`` per image (intact images count too)."""
    best = (0.0, REGION_THRESHOLDS[-1])
    for threshold in REGION_THRESHOLDS:
        false_boxes = found = 0
        for i in range(len(maps)):
            hit_any = False
            for region in find_regions(maps[i], threshold):
                hit = _hit(coverage[i], region)
                false_boxes += 0 if hit else 1
                hit_any |= hit
            found += bool(outlined[i] and hit_any)
        recall = found / max(1, int(outlined.sum()))
        if false_boxes <= max_false_per_image * len(maps) and recall >= best[0]:
            best = (recall, threshold)
    return best


def nested_operating_points(
    labels: np.ndarray, scores: np.ndarray, folds: np.ndarray
) -> dict[str, dict[str, float]]:
    """Sensitivity and specificity at thresholds chosen *without* the images they are
    measured on: for each fold, the thresholds come from the other folds' held-out
    answers and are applied to this fold's; the counts are pooled over the folds.

    Choosing a threshold on the answers it is then measured on gives back the target by
    construction (95%); this is what the rule keeps on images it was not chosen on."""
    counts = {name: np.zeros(4) for name in ("rule_out", "rule_in")}  # tp, fn, tn, fp
    for fold in np.unique(folds):
        rest, this = folds != fold, folds == fold
        rule_out, rule_in = operating_points(labels[rest], scores[rest])
        thresholds = {"rule_out": rule_out, "rule_in": rule_in}
        for name, threshold in thresholds.items():
            positive = scores[this] >= threshold
            truth = labels[this] == 1
            counts[name] += [
                np.sum(positive & truth),
                np.sum(~positive & truth),
                np.sum(~positive & ~truth),
                np.sum(positive & ~truth),
            ]
    return {
        name: {
            "sensitivity": round(float(c[0] / max(1.0, c[0] + c[1])), 4),
            "specificity": round(float(c[2] / max(1.0, c[2] + c[3])), 4),
        }
        for name, c in counts.items()
    }
