"""The page's preview is priced by the service's decode budget and decoded once per file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import ui.preview
from modelio.budget import check_decode_cost
from modelio.images import DEFAULT_MAX_PIXELS, ImageDecodeError
from ui.preview import Preview, cached_preview, make_preview


def png_16bit(width: int = 300, height: int = 200) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), 1234, np.uint16)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_file_over_the_budget_gets_no_preview_and_the_services_sentence(monkeypatch):
    data = png_16bit()
    budget = 300 * 200 * 10  # below what a 16-bit image of this size costs
    with pytest.raises(ImageDecodeError) as service_says:
        check_decode_cost(data, budget, DEFAULT_MAX_PIXELS)

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("the preview decoded a file over the budget")

    monkeypatch.setattr(ui.preview, "DEFAULT_MAX_DECODE_BYTES", budget)
    monkeypatch.setattr(ui.preview, "decode", no_decoding)

    shown = make_preview(data)

    assert shown.image is None
    assert shown.reason == str(service_says.value)
    assert "BONEFRAC_MAX_DECODE_BYTES" in shown.reason


def test_a_file_within_the_budget_is_previewed() -> None:
    shown = make_preview(png_16bit())
    assert shown.image is not None
    assert shown.reason is None


def test_the_preview_is_decoded_once_per_file(monkeypatch) -> None:
    calls: list[bytes] = []

    def counting(data: bytes) -> Preview:
        calls.append(data)
        return Preview(None, "counted")

    monkeypatch.setattr(ui.preview, "make_preview", counting)
    cached_preview.clear()
    for _rerun in range(3):
        assert cached_preview("digest-a", b"a").reason == "counted"
    cached_preview("digest-b", b"b")

    assert calls == [b"a", b"b"]
    cached_preview.clear()
