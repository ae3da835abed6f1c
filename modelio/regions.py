"""From a fracture map to boxes: the one reading shared by the service and the experiments.

The model's ``fracture_map`` output gives, for each cell of a coarse grid over the image
(22 x 22 for the shipped model), the probability that a fracture lies there. Cells at or
above a threshold that touch (8-connected) form one region; its box is the cells' extent,
its score its strongest cell. The grid spans the image as the model saw it, squeezed to a
square, so a cell is a fixed fraction of the width and of the height, and boxes scale
back to the uploaded image's pixels by those fractions.

Pure numpy (a flood fill over a few hundred cells costs microseconds), so the service
needs no image library for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: At most this many regions per image, strongest first.
MAX_REGIONS = 5


@dataclass(frozen=True)
class Region:
    """Connected cells above the threshold: their extent on the grid and their peak."""

    row0: int
    col0: int
    row1: int  # exclusive
    col1: int  # exclusive
    score: float
    peak: tuple[int, int]  # (row, col) of the strongest cell

    def box(self, grid: tuple[int, int], size: tuple[int, int]) -> list[float]:
        """``[x_min, y_min, x_max, y_max]`` in pixels of an image ``size = (width, height)``."""
        rows, cols = grid
        width, height = size
        return [
            round(self.col0 * width / cols, 1),
            round(self.row0 * height / rows, 1),
            round(self.col1 * width / cols, 1),
            round(self.row1 * height / rows, 1),
        ]

    def relative(self, grid: tuple[int, int]) -> tuple[float, float, float, float]:
        """The box as fractions of the image's width and height."""
        rows, cols = grid
        return (self.col0 / cols, self.row0 / rows, self.col1 / cols, self.row1 / rows)


def find_regions(
    fracture_map: np.ndarray, threshold: float, max_regions: int = MAX_REGIONS
) -> list[Region]:
    """Regions of ``fracture_map`` (h, w) at or above ``threshold``, strongest first.

    A map that is not 2-D or not finite gives no region: a foreign model's output is
    no reason to fail an answer.
    """
    values = np.asarray(fracture_map, dtype=np.float64)
    if values.ndim != 2 or not np.all(np.isfinite(values)):
        return []
    above = values >= threshold
    seen = np.zeros_like(above)
    rows, cols = values.shape
    regions: list[Region] = []
    for start in zip(*np.nonzero(above), strict=True):
        if seen[start]:
            continue
        stack = [start]
        seen[start] = True
        cells = []
        while stack:
            r, c = stack.pop()
            cells.append((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    nr, nc = r + dr, c + dc
                    if 0 <= nr < rows and 0 <= nc < cols and above[nr, nc] and not seen[nr, nc]:
                        seen[nr, nc] = True
                        stack.append((nr, nc))
        members = np.array(cells)
        scores = values[members[:, 0], members[:, 1]]
        best = members[int(np.argmax(scores))]
        regions.append(
            Region(
                row0=int(members[:, 0].min()),
                col0=int(members[:, 1].min()),
                row1=int(members[:, 0].max()) + 1,
                col1=int(members[:, 1].max()) + 1,
                score=float(scores.max()),
                peak=(int(best[0]), int(best[1])),
            )
        )
    regions.sort(key=lambda region: -region.score)
    return regions[:max_regions]
