"""Fixtures shared by the trainer's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.fake_radiographs import radiograph, write


@pytest.fixture
def duplicated_dataset(tmp_path: Path) -> Path:
    """Three classes; many images come in near-duplicate families with different names."""
    rng = np.random.default_rng(0)
    for label in range(3):
        for family in range(8):
            base = radiograph(100 * label + family)
            copies = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
            for k, copy in enumerate(copies[: 1 + int(rng.integers(0, 2))]):
                write(tmp_path / f"class {label}" / f"x{family}_{k}.png", copy)
            # a Roboflow-style augmented copy: same stem, unrelated pixels
            write(
                tmp_path / f"class {label}" / f"src{family}_jpg.rf.{k}abc.jpg",
                radiograph(9000 + 100 * label + family),
            )
            write(
                tmp_path / f"class {label}" / f"src{family}_jpg.rf.ff{k}.jpg",
                radiograph(5000 + 100 * label + family),
            )
    return tmp_path
