"""Small encoded images for the records tests (distinct bytes, distinct answers)."""

from __future__ import annotations

import io

from PIL import Image


def png(level: int, size: tuple[int, int] = (32, 24)) -> bytes:
    """A flat gray PNG: ``level`` 0..255 sets the stand-in model's answer."""
    out = io.BytesIO()
    Image.new("L", size, level).save(out, format="PNG")
    return out.getvalue()


def jpeg(level: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (level, level, level)).save(out, format="JPEG")
    return out.getvalue()
