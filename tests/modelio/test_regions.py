"""Boxes from a fracture map: connected cells above a threshold, in the image's pixels."""

from __future__ import annotations

import numpy as np

from modelio.regions import find_regions


def test_two_separate_blobs_are_two_regions_strongest_first() -> None:
    fracture_map = np.zeros((10, 10))
    fracture_map[1:3, 1:3] = 0.6
    fracture_map[6:9, 5:7] = 0.9
    regions = find_regions(fracture_map, 0.5)
    assert [round(r.score, 2) for r in regions] == [0.9, 0.6]
    assert (regions[0].row0, regions[0].col0, regions[0].row1, regions[0].col1) == (6, 5, 9, 7)


def test_diagonal_neighbours_join_one_region() -> None:
    fracture_map = np.zeros((5, 5))
    fracture_map[1, 1] = fracture_map[2, 2] = fracture_map[3, 3] = 0.8
    assert len(find_regions(fracture_map, 0.5)) == 1


def test_boxes_scale_to_the_image_as_shown_not_to_a_square() -> None:
    fracture_map = np.zeros((22, 22))
    fracture_map[11:22, 0:11] = 0.7  # lower-left quarter
    (region,) = find_regions(fracture_map, 0.5)
    assert region.box((22, 22), (400, 300)) == [0.0, 150.0, 200.0, 300.0]


def test_nothing_above_the_threshold_and_foreign_maps_give_no_region() -> None:
    assert find_regions(np.full((4, 4), 0.2), 0.5) == []
    assert find_regions(np.full((4, 4, 2), 0.9), 0.5) == []
    assert find_regions(np.array([[np.nan, 0.9]]), 0.5) == []


def test_at_most_max_regions() -> None:
    fracture_map = np.zeros((9, 9))
    fracture_map[::2, ::2] = np.linspace(0.6, 0.99, 25).reshape(5, 5)
    regions = find_regions(fracture_map, 0.5, max_regions=3)
    assert len(regions) == 3
    assert regions[0].score == max(r.score for r in find_regions(fracture_map, 0.5, 30))
