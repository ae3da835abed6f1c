"""The fracture heads fitted on row indices answer exactly as on copied rows.

The cross-validation passes each (inner) fold's images as indices into the full arrays,
so the largest of them (the per-position features, gigabytes on FracAtlas) is never
copied per fold; this checks, on small made-up features, that nothing but the memory
changes.
"""

from __future__ import annotations

import numpy as np

from trainer.fracture_heads import fit_fracture_heads


def features(
    n: int = 90, grid: int = 6, channels: int = 12, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pooled, positions, coverage, fractured, groups): a third of the images fractured,
    most of those outlined, their outlined cells and pooled features shifted."""
    rng = np.random.default_rng(seed)
    fractured = (np.arange(n) % 3 == 0).astype(np.int64)
    groups = np.arange(n) // 2  # pairs of near-duplicates
    pooled = rng.normal(size=(n, 8)).astype(np.float32)
    positions = rng.normal(size=(n, grid, grid, channels)).astype(np.float16)
    coverage = np.zeros((n, grid, grid), np.float32)
    for image in np.flatnonzero(fractured)[:-3]:  # the last three fractured: no outline
        y, x = rng.integers(0, grid - 2, 2)
        coverage[image, y : y + 2, x : x + 2] = 0.6
        positions[image, y : y + 2, x : x + 2, :3] += 2.0
        pooled[image, :2] += 1.0
    return pooled, positions, coverage, fractured, groups


def test_fitting_on_row_indices_equals_fitting_on_copied_rows() -> None:
    pooled, positions, coverage, fractured, groups = features()
    order = np.arange(len(fractured))
    train, val = order[order % 5 != 4], order[order % 5 == 4]

    copied = fit_fracture_heads(
        pooled[train], positions[train], coverage[train], fractured[train], groups[train], seed=1
    )
    indexed = fit_fracture_heads(pooled, positions, coverage, fractured, groups, seed=1, rows=train)

    expected, got = copied.arrays(), indexed.arrays()
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    for want, have in zip(
        copied.answer(pooled[val], positions[val]),
        indexed.answer(pooled, positions, rows=val),
        strict=True,
    ):
        np.testing.assert_array_equal(have, want)
    # chunks that end inside an image gather the same cells as the copied rows
    np.testing.assert_array_equal(
        indexed.localiser.logits(positions, chunk=50, rows=val),
        indexed.localiser.logits(positions[val], chunk=50),
    )
