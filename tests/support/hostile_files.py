"""Cheap hostile files (issue 18), for the suite and for ``benchmarks/hostile_burst.py``.

Each is made in milliseconds from a small ordinary image by editing its markers, as an
attacker would: nothing here needs the decoder to run on the result.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

_SOS = 0xDA
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
J2K_SOC_SIZ = b"\xff\x4f\xff\x51"


def gray_jpeg(width: int = 96, height: int = 72, *, progressive: bool = False) -> bytes:
    """A gray, radiograph-like JPEG (a ramp with noise)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, width)[np.newaxis, :] * np.linspace(0.3, 1, height)[:, np.newaxis]
    pixels = np.clip(ramp + rng.normal(0, 10, (height, width)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, "JPEG", quality=90, progressive=progressive)
    return buffer.getvalue()


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of each marker segment up to the first scan's header."""
    found = []
    position = 2
    while True:
        marker = data[position + 1]
        (length,) = struct.unpack_from(">H", data, position + 2)
        found.append((marker, position, position + 2 + length))
        if marker == _SOS:
            return found
        position += 2 + length


def with_frame_size(data: bytes, width: int, height: int, start: int = 0) -> bytes:
    """``data`` with the JPEG (or JPEG-LS) codestream at ``start`` claiming ``width`` x
    ``height`` in its frame header (SOFn)."""
    for marker, offset, _end in _segments(data[start:]):
        if marker in _SOF_MARKERS:
            at = start + offset
            return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]
    raise ValueError("no frame header")


def dicom_with_codestream_size(data: bytes, width: int, height: int) -> bytes:
    """A DICOM file whose first JPEG 2000 or JPEG codestream claims ``width`` x
    ``height`` while its Rows and Columns stay as they were (the issue's RG3_J2KR case)."""
    j2k = data.find(J2K_SOC_SIZ)
    if j2k != -1:  # SOC, SIZ, Lsiz, Rsiz, then Xsiz and Ysiz with the offsets 0
        return data[: j2k + 8] + struct.pack(">II", width, height) + data[j2k + 16 :]
    return with_frame_size(data, width, height, start=data.index(b"\xff\xd8\xff", 132))


def progressive_scan_bomb(side: int = 512, repeats: int = 200) -> bytes:
    """A flat progressive JPEG whose smallest scan is repeated ``repeats`` times: tiny
    on the wire, one pass over the whole image for the decoder each time (the issue's
    bomb: 6000 x 6000, one 59-byte scan 3,000 times, 391 KB and 20 s of CPU)."""
    buffer = io.BytesIO()
    Image.new("L", (side, side), 100).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    end = data.rindex(b"\xff\xd9")
    starts = []
    position = data.find(b"\xff\xda")
    while position != -1:
        starts.append(position)
        position = data.find(b"\xff\xda", position + 2)
    scans = [data[a:b] for a, b in zip(starts, [*starts[1:], end], strict=True)]
    smallest = min(scans[1:], key=len)  # an AC scan: the first (DC) one is the image
    return data[:end] + smallest * repeats + data[end:]


def cut_jpeg(data: bytes, fraction: float, *, end_marker: bool) -> bytes:
    """The first ``fraction`` of a JPEG, with or without an end-of-image marker after."""
    cut = data[: int(len(data) * fraction)]
    return cut + b"\xff\xd9" if end_marker else cut
