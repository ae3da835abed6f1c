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
    probability: float | None  # None only for an output that is no probability
    finding: Finding
    rules: FractureRules
    regions: tuple[FractureRegion, ...]
    image_size: tuple[int, int]  # (width, height) as shown: the boxes' frame
    caveat: str | None = None  # why the finding was held at "uncertain"


def read_fracture(
    probability: float,
    fracture_map: np.ndarray | None,
    rules: FractureRules,
    size: tuple[int, int],
    caveat: str | None = None,
) -> FractureAnswer:
    """The finding for ``probability`` and, unless it is ``no_fracture``, the map's
    regions as boxes in pixels of the image as shown (``size = (width, height)``).

    With a ``caveat`` (the image is not one the model can judge: unfamiliar, coloured, a
    body part it never learned), a finding is never "no fracture seen": it is held at
    ``uncertain``, whatever the probability, because a reassuring answer is the
    dangerous one there. An output that is no probability (NaN, outside 0..1) gives
    ``uncertain`` with no probability and no box; a foreign map shape gives no box.
    """
    value = float(probability)
    valid = bool(np.isfinite(value)) and 0.0 <= value <= 1.0
    seen: Finding = rules.finding(value) if valid else "uncertain"
    finding: Finding = "uncertain" if caveat is not None and seen == "no_fracture" else seen
    regions: tuple[FractureRegion, ...] = ()
    usable_map = fracture_map is not None and fracture_map.ndim == 2
    if valid and seen != "no_fracture" and usable_map:
        cells = np.clip(np.asarray(fracture_map, np.float64), 0.0, 1.0)
        grid = (int(cells.shape[0]), int(cells.shape[1]))
        regions = tuple(
            FractureRegion(box=tuple(r.box(grid, size)), score=round(r.score, 4))  # type: ignore[arg-type]
            for r in find_regions(cells, rules.region_threshold)
        )
    return FractureAnswer(
        probability=round(value, 4) if valid else None,
        finding=finding,
        rules=rules,
        regions=regions,
        image_size=size,
        caveat=caveat,
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
    caveat = f" {answer.caveat}" if answer.caveat else ""
    return f"{FINDING_HEADLINES[answer.finding]}{detail};{caveat} {kind}."
