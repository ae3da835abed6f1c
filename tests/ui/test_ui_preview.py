"""The page's local preview: 16-bit radiographs stay visible; odd files give no preview."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ui.preview import preview


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_twelve_bit_radiograph_is_not_clipped_white() -> None:
    pixels = np.tile(np.linspace(0, 4095, 64), (32, 1)).astype(np.uint16)  # 12-bit detector
    shown = preview(_png(Image.fromarray(pixels)))
    assert shown is not None
    values = np.asarray(shown.convert("L"), dtype=np.float64)
    assert values.min() < 10
    assert values.max() > 245
    assert 100 < values.mean() < 155  # a ramp, not a white sheet


def test_not_an_image_and_bombs_give_no_preview() -> None:
    assert preview(b"plain text") is None
    assert preview(_png(Image.new("L", (10_000, 10_000)))) is None
