"""The heatmap overlay: evidence tints the image where it is, and nothing elsewhere."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from ui.overlay import HeatmapError, overlay, read_heatmap


def _png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_evidence_tints_its_own_corner_and_leaves_the_rest_alone() -> None:
    radiograph = Image.new("L", (200, 100), 128)
    heat = np.zeros((50, 100), np.uint8)
    heat[:10, :20] = 255  # top-left, at half the size: the overlay scales it up
    heat[40:, 80:] = 100
    heatmap = read_heatmap(_png_base64(Image.fromarray(heat)))

    shown = np.asarray(overlay(radiograph, heatmap, opacity=0.6))
    assert shown.shape == (100, 200, 3)
    red, green, blue = (int(v) for v in shown[5, 5])  # strongest: yellow over the gray
    assert red > 180
    assert green > 180
    assert blue < 80
    red, green, blue = (int(v) for v in shown[95, 195])  # weaker: redder, fainter
    assert red > green + 30
    assert red > blue + 30
    np.testing.assert_array_equal(shown[95, 5], [128, 128, 128])  # no evidence: untouched


def test_opacity_zero_shows_the_image_unchanged() -> None:
    radiograph = Image.new("L", (64, 64), 90)
    heatmap = Image.new("L", (64, 64), 255)
    np.testing.assert_array_equal(
        np.asarray(overlay(radiograph, heatmap, 0.0)), np.asarray(radiograph.convert("RGB"))
    )
    assert not np.array_equal(
        np.asarray(overlay(radiograph, heatmap, 1.0)), np.asarray(radiograph.convert("RGB"))
    )


def test_an_unreadable_heatmap_is_a_clear_error() -> None:
    with pytest.raises(HeatmapError, match="not a readable PNG"):
        read_heatmap("bm90IGEgcG5n")  # "not a png"
    with pytest.raises(HeatmapError):
        read_heatmap("%%%")
