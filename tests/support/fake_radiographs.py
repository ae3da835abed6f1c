"""Tiny image files for data tests: distinct random block patterns, written to disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def radiograph(seed: int, size: int = 48) -> Image.Image:
    """A random blocky gray image; different seeds give perceptually different images."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    return Image.fromarray(blocks).resize((size, size), Image.Resampling.NEAREST)


def write(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
