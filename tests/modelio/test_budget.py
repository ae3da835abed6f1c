"""The decode budget lives in modelio, so the service and the page price a decode alike."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from modelio.budget import (
    DECODE_BYTES_PER_PIXEL,
    DEFAULT_MAX_DECODE_BYTES,
    check_decode_cost,
    decode_cost,
)
from modelio.images import DEFAULT_MAX_PIXELS, ImageDecodeError


def png_16bit(width: int = 300, height: int = 200) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), 1234, np.uint16)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_16bit_canvas_is_priced_from_its_header_and_refused_over_the_budget() -> None:
    data = png_16bit()
    cost = decode_cost(data)
    assert cost is not None
    assert (cost.width, cost.height) == (300, 200)
    assert cost.bytes == 300 * 200 * DECODE_BYTES_PER_PIXEL[cost.mode]

    check_decode_cost(data, cost.bytes, DEFAULT_MAX_PIXELS)  # exactly the budget: passes
    with pytest.raises(ImageDecodeError, match="BONEFRAC_MAX_DECODE_BYTES") as refused:
        check_decode_cost(data, cost.bytes - 1, DEFAULT_MAX_PIXELS)
    assert refused.value.kind == "too_large"
    assert "300x200" in str(refused.value)


def test_the_service_takes_its_budget_from_modelio() -> None:
    import service.inference
    from service.settings import Settings

    assert service.inference.check_decode_cost is check_decode_cost
    assert Settings.model_fields["max_decode_bytes"].default == DEFAULT_MAX_DECODE_BYTES
