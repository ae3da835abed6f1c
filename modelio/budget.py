"""What decoding an image will cost, priced from its header before any pixel is decoded.

The one decode budget for every caller of :mod:`modelio.images`: the service checks
each upload with :func:`check_decode_cost` before decoding it, and so does the page
before drawing its preview, so both refuse the same files with the same sentence. The
page's preview once decoded a 77 KB 16-bit PNG of 6320x6320 that the service refused:
3.2 s and +1 GiB of memory, again on every rerun.

The pixel cap (``max_pixels``) bounds the count; this bounds the cost, from the bytes
per pixel the shared decoder was measured to need in each mode.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from modelio.dicom import is_dicom, read_geometry
from modelio.errors import ImageDecodeError

#: The default budget (``BONEFRAC_MAX_DECODE_BYTES``): 512 MiB of working memory.
DEFAULT_MAX_DECODE_BYTES = 512 * 1024 * 1024
#: Peak working memory per pixel of the shared decoder (decode, upright, to 8-bit,
#: resize, colourfulness) by Pillow mode, from ru_maxrss on 3000x3000 PNGs: gray 1.0,
#: RGB 4.2, RGBA/LA/P 16.2 and 16-bit 28.1 bytes. Gray and RGB are doubled for the copy
#: an EXIF rotation makes; 32-bit modes go through the same float64 stretch as 16-bit.
DECODE_BYTES_PER_PIXEL: dict[str, int] = {
    "1": 2,
    "L": 2,
    "RGB": 8,
    "YCbCr": 8,
    "LAB": 8,
    "HSV": 8,
    "CMYK": 8,
    "P": 16,
    "PA": 16,
    "LA": 16,
    "La": 16,
    "RGBA": 16,
    "RGBa": 16,
    "I;16": 28,
    "I;16L": 28,
    "I;16B": 28,
    "I;16N": 28,
    "I": 40,
    "F": 40,
}
_UNKNOWN_MODE_BYTES = 40
JPEG_MAGIC = b"\xff\xd8\xff"
#: The dearest mode a JPEG decodes to (CMYK, or RGB with an EXIF rotation).
JPEG_MAX_BYTES_PER_PIXEL = 8
_TRANSPARENT_BYTES = 16  # a gray or RGB image with a transparent colour is composited
#: Peak working memory per pixel of a DICOM decode (first frame, Modality LUT, VOI,
#: to 8-bit), from ru_maxrss: 9 (16-bit, percentile window) to 25 bytes (16-bit with
#: rescale and window, or JPEG 2000 lossless), 21 for 8-bit RGB, on 3000x3000 synthetic
#: files and the pydicom-data radiographs. Rounded up: a 4096x4096 plate passes 512 MiB.
DICOM_BYTES_PER_PIXEL = 32


@dataclass(frozen=True)
class DecodeCost:
    """An image's size, its mode as the decoder sees it and the memory it would take."""

    width: int
    height: int
    mode: str
    bytes: int


def decode_cost(data: bytes) -> DecodeCost | None:
    """The cost from the header alone, or None when the header is unreadable (the
    shared decoder then gives the precise error)."""
    if is_dicom(data):
        geometry = read_geometry(data)
        if geometry is None:
            return None
        width, height = geometry.columns, geometry.rows
        mode = f"DICOM {geometry.samples}x{geometry.bits_allocated}-bit"
        return DecodeCost(width, height, mode, width * height * DICOM_BYTES_PER_PIXEL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                mode = image.mode
                per_pixel = DECODE_BYTES_PER_PIXEL.get(mode, _UNKNOWN_MODE_BYTES)
                if "transparency" in image.info:
                    per_pixel = max(per_pixel, _TRANSPARENT_BYTES)
    except Exception:  # any header Pillow cannot read: decode_image says why
        return None
    return DecodeCost(width, height, mode, width * height * per_pixel)


def check_decode_cost(data: bytes, max_decode_bytes: int, max_pixels: int) -> None:
    """Refuse (``too_large``, 413 in the service) an image whose decoding would cost too
    much.

    The pixel cap bounds the count, not the cost: a 77 KB 16-bit PNG of 6320x6320 is
    within 40 megapixels but took 8-10 s and 1.1 GB to decode and stretch. Checked from
    Pillow's header, before any pixel is decoded. JPEGs (8-bit gray, RGB or CMYK only) are
    skipped when the pixel cap already bounds them: parsing their header a second time
    was the dearest part of the check, and they are most of what radiographs come as.
    DICOM files are always checked (their cost is read from the DICOM header; a DICOM
    preamble may itself start like a JPEG).
    """
    if (
        data[:3] == JPEG_MAGIC
        and max_pixels * JPEG_MAX_BYTES_PER_PIXEL <= max_decode_bytes
        and not is_dicom(data)
    ):
        return  # a JPEG within the pixel cap cannot exceed the budget: skip the header parse
    cost = decode_cost(data)
    if cost is not None and cost.bytes > max_decode_bytes:
        raise ImageDecodeError(
            "too_large",
            f"The image ({cost.width}x{cost.height}, mode {cost.mode}) would need about "
            f"{cost.bytes // 2**20} MiB to decode, more than the {max_decode_bytes // 2**20} "
            "MiB allowed (BONEFRAC_MAX_DECODE_BYTES).",
        )
