"""The explanation's heatmap laid over the radiograph, for the page.

The service returns the heatmap as an 8-bit gray PNG with the image's orientation and
aspect ratio (0 = no evidence, 255 = the image's strongest). Here it is coloured from
dark red to yellow and blended over the preview, each pixel as opaque as its evidence
times the reader's ``opacity``, so where the model found nothing the radiograph shows
through untouched.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, UnidentifiedImageError


class HeatmapError(ValueError):
    """The service's heatmap could not be read (never expected; shown as a note)."""


def read_heatmap(png_base64: str) -> Image.Image:
    """The ``heatmap_png`` field as an ``L`` image."""
    try:
        image = Image.open(io.BytesIO(base64.b64decode(png_base64, validate=True)))
        image.load()
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise HeatmapError(f"the heatmap is not a readable PNG: {exc}") from exc
    return image.convert("L")


def heat_colours(evidence: np.ndarray) -> np.ndarray:
    """Evidence 0..1 -> RGB 0..1 from red to yellow (no white: it would read as bone)."""
    ramp = np.clip(2.0 * evidence[..., np.newaxis] - np.array([0.0, 1.0, 2.0]), 0.0, 1.0)
    return ramp.astype(np.float32)


def overlay(image: Image.Image, heatmap: Image.Image, opacity: float) -> Image.Image:
    """``image`` with ``heatmap`` blended over it at ``opacity`` (0..1), at ``image``'s size."""
    opacity = float(np.clip(opacity, 0.0, 1.0))
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    heat = heatmap.convert("L").resize(image.size, Image.Resampling.BILINEAR)
    evidence = np.asarray(heat, dtype=np.float32) / 255.0
    alpha = (opacity * evidence)[..., np.newaxis]
    blended = base * (1.0 - alpha) + heat_colours(evidence) * alpha
    return Image.fromarray((np.clip(blended, 0.0, 1.0) * 255.0).round().astype(np.uint8))


#: Box outline colour: cyan reads against both bone (white) and the red-yellow heatmap.
BOX_COLOUR = (0, 220, 255)


def draw_boxes(
    image: Image.Image,
    boxes: list[tuple[float, float, float, float]],
    frame: tuple[int, int] | None,
) -> Image.Image:
    """``image`` with each box outlined; boxes are in pixels of ``frame`` (width, height),
    the image as the service saw it, and are scaled to the preview's size."""
    from PIL import ImageDraw  # noqa: PLC0415 - Pillow's drawing is only needed here

    out = image.convert("RGB")
    if not boxes:
        return out
    frame_width, frame_height = frame or out.size
    sx = out.width / max(frame_width, 1)
    sy = out.height / max(frame_height, 1)
    draw = ImageDraw.Draw(out)
    line = max(2, round(min(out.size) / 150))
    for x0, y0, x1, y1 in boxes:
        draw.rectangle((x0 * sx, y0 * sy, x1 * sx, y1 * sy), outline=BOX_COLOUR, width=line)
    return out
