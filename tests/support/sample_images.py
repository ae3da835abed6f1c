"""Encoded test images: gray radiograph-like pictures in every accepted format and mode."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image


def encode(
    fmt: str = "PNG", mode: str = "L", size: tuple[int, int] = (96, 72), seed: int = 0
) -> bytes:
    """A gray, radiograph-like test image encoded as ``fmt`` in Pillow ``mode``."""
    rng = np.random.default_rng(seed)
    height, width = size[1], size[0]
    ramp = np.linspace(0, 1, width)[np.newaxis, :] * np.linspace(0.3, 1, height)[:, np.newaxis]
    gray = np.clip(ramp * 200 + rng.normal(0, 10, (height, width)), 0, 255)
    if mode == "I;16":
        image = Image.fromarray((gray * 257).astype(np.uint16))
    elif mode == "L":
        image = Image.fromarray(gray.astype(np.uint8), "L")
    else:
        image = Image.fromarray(gray.astype(np.uint8), "L").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def colourful_png() -> bytes:
    """A vivid red and blue picture: certainly not a radiograph."""
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:32, :, 0] = 220
    pixels[32:, :, 2] = 220
    pixels[:, ::8, 1] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def upload(data: bytes, filename: str = "image.png", field: str = "file") -> dict:
    """A ``files=`` argument for one multipart upload."""
    return {field: (filename, data, "application/octet-stream")}


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("note.txt", "not an image")
    return buffer.getvalue()


def bomb_png(side: int = 30_000) -> bytes:
    """A valid PNG header claiming ``side`` x ``side`` pixels in a few hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * side
    compressed = zlib.compress(row * 8, 9)  # only a few rows: the rest is missing
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", compressed)
        + chunk(b"IEND", b"")
    )


def big_16bit_png(side: int = 6320) -> bytes:
    """A complete, valid 16-bit gray PNG of ``side`` x ``side`` in well under 100 KB.

    Streamed through zlib row by row, so making it costs neither the 80 MB of pixels it
    holds nor the time to decode them.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x12\x34" * side
    parts = [compressor.compress(row) for _ in range(side)]
    parts.append(compressor.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )
