"""The shared decode/resize path: every supported input becomes the same kind of array."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from modelio.images import (
    ImageDecodeError,
    InputSpec,
    colourfulness,
    decode_image,
    load_array,
)

SPEC = InputSpec(24, 32, 1)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 40, height: int = 30) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width, dtype=np.float64), (height, 1))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "TIFF", "WEBP"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_every_accepted_format_and_mode_gives_model_input(fmt: str, mode: str) -> None:
    image = Image.fromarray(gradient().astype(np.uint8)).convert(mode)
    array = load_array(encode(image, fmt), SPEC)
    assert array.shape == (24, 32, 1)
    assert array.dtype == np.float32
    assert 0 <= array.min() < 40
    assert 215 < array.max() <= 255


def test_rgb_spec_replicates_gray() -> None:
    image = Image.fromarray(gradient().astype(np.uint8))
    array = load_array(encode(image, "PNG"), InputSpec(24, 32, 3))
    assert array.shape == (24, 32, 3)
    np.testing.assert_array_equal(array[..., 0], array[..., 2])


def test_sixteen_bit_is_stretched_to_full_range() -> None:
    pixels = (gradient() * 16).astype(np.uint16)  # a 12-bit detector's range
    data = encode(Image.fromarray(pixels), "PNG")
    decoded = decode_image(data)
    assert decoded.mode == "L"
    values = np.asarray(decoded)
    assert values.min() == 0
    assert values.max() == 255


def test_alpha_is_composited_on_black() -> None:
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, :20, 3] = 255  # left half opaque white, right half transparent
    array = load_array(encode(Image.fromarray(rgba), "PNG"), InputSpec(30, 40, 1))
    assert array[:, :15].mean() > 250
    assert array[:, 25:].mean() < 5


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((20, 60), np.uint8)
    pixels[:, :30] = 255  # bright left half, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    data = encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
    upright = decode_image(data)
    assert upright.size == (20, 60)  # portrait once rotated
    top, bottom = np.asarray(upright)[:30].mean(), np.asarray(upright)[30:].mean()
    assert top > 200
    assert bottom < 50


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"", "empty"),
        (b"hello, this is text", "not_image"),
        (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "not_image"),
        (b"PK\x03\x04" + b"\x00" * 40, "not_image"),
    ],
)
def test_non_images_are_refused_with_a_reason(payload: bytes, kind: str) -> None:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(payload)
    assert caught.value.kind == kind
    assert str(caught.value)


def test_truncated_image_is_corrupt() -> None:
    data = encode(Image.fromarray(gradient(200, 200).astype(np.uint8)), "JPEG")
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data[: len(data) // 2])
    assert caught.value.kind == "corrupt"


def test_decompression_bomb_is_refused_from_the_header() -> None:
    bomb = encode(Image.new("L", (10_000, 10_000)), "PNG")  # ~100 kB, 100 Mpx
    assert len(bomb) < 200_000
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(bomb, max_pixels=20_000_000)
    assert caught.value.kind == "too_large"


def test_colourfulness_separates_gray_from_colour() -> None:
    gray = Image.fromarray(gradient().astype(np.uint8)).convert("RGB")
    vivid = np.zeros((30, 40, 3), np.uint8)
    vivid[:, :20] = (255, 0, 0)
    vivid[:, 20:] = (0, 0, 255)
    assert colourfulness(gray) < 1
    assert colourfulness(Image.fromarray(vivid)) > 50
