"""The first question a reader asks: is a bone broken, and where?

A version with fracture heads outputs ``fracture_probability`` and ``fracture_map``
(:mod:`modelio.contract`); its ``metadata.json`` → ``fracture`` holds the thresholds that
turn them into a finding and boxes (:class:`modelio.contract.FractureRules`). This module
makes that reading, so the route only carries the answer, and says it in one sentence
that leads with the finding and only then names the type, as a conditional: the type
head was trained on fractures only and names a type for any image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelio.contract import FINDING_HEADLINES, Finding, FractureRules
from modelio.regions import find_regions


@dataclass(frozen=True)
class FractureRegion:
    box: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max in pixels as shown
    score: float


@dataclass(frozen=True)
class FractureAnswer:
    probability: float | None  # None only for a non-finite output (then "uncertain")
    finding: Finding
    rules: FractureRules
    regions: tuple[FractureRegion, ...]
    image_size: tuple[int, int]  # (width, height) as shown: the boxes' frame


def read_fracture(
    probability: float,
    fracture_map: np.ndarray | None,
    rules: FractureRules,
    size: tuple[int, int],
) -> FractureAnswer:
    """The finding for ``probability`` and, unless it is ``no_fracture``, the map's
    regions as boxes in pixels of the image as shown (``size = (width, height)``)."""
    value = float(probability)
    finding = rules.finding(value) if np.isfinite(value) else "uncertain"
    regions: tuple[FractureRegion, ...] = ()
    if finding != "no_fracture" and fracture_map is not None:
        grid = (int(fracture_map.shape[0]), int(fracture_map.shape[1]))
        regions = tuple(
            FractureRegion(box=tuple(r.box(grid, size)), score=round(r.score, 4))  # type: ignore[arg-type]
            for r in find_regions(fracture_map, rules.region_threshold)
        )
    return FractureAnswer(
        probability=round(value, 4) if np.isfinite(value) else None,
        finding=finding,
        rules=rules,
        regions=regions,
        image_size=size,
    )


def summary(answer: FractureAnswer | None, label: str, confidence: float) -> str:
    """One sentence: the finding first, then the type as a conditional."""
    kind = f"if this is a fracture, its type is most likely {label} ({confidence:.0%})"
    if answer is None:
        return f"This model does not say whether a bone is broken; {kind}."
    where = ""
    if answer.regions:
        where = f", {len(answer.regions)} region{'s' if len(answer.regions) > 1 else ''} marked"
    chance = "" if answer.probability is None else f"fracture probability {answer.probability:.0%}"
    detail = f" ({chance}{where})" if chance or where else ""
    return f"{FINDING_HEADLINES[answer.finding]}{detail}; {kind}."
