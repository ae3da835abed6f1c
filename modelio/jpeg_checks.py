"""JPEGs whose markers lie, refused before (or right after) Pillow decodes them.

libjpeg believes the frame header and fills whatever its data do not cover with gray,
without an error Pillow could pass on; and it decodes as many progressive scans as a
file holds, each one a pass over the whole image. So, from the markers
(:func:`modelio.codestream.read_jpeg`):

- Fewer entropy-coded bytes than the frame needs at the very least (one bit per 8x8
  block): the header claims more pixels than the data hold (``corrupt``, 422).
- A progressive JPEG whose scans together pass over the image more than
  :data:`MAX_SCAN_PASSES` times: a scan bomb (``too_large``, 413). Ordinary encoders
  write 6-10 scans, about 5 passes.
- Data that stop without an end-of-image marker: a sequential JPEG gets the marker
  appended, so complete data missing only their last two bytes (some scanners and
  cameras write them so) decode; if the data were cut short, the gray fill check below
  refuses them. A progressive JPEG without its marker is left to Pillow, which refuses
  it as truncated (a cut progressive file still looks complete, only blurred).

And after decoding (:func:`ends_in_gray_fill`): the last block exactly the decoder's
gray fill (all samples 128) means the data ended before the last row.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from modelio.codestream import JpegFrame, read_jpeg
from modelio.errors import ImageDecodeError

#: Pillow's names of JPEG files.
JPEG_FORMATS = frozenset({"JPEG", "MPO"})
#: The most passes over the image (8x8 blocks visited by all scans, over the blocks of
#: the frame) a progressive JPEG may ask of its decoder. libjpeg's default progression
#: makes about 5; a 6000x6000 file whose one scan was repeated 3,000 times took 20 s.
MAX_SCAN_PASSES = 32
#: What libjpeg decodes a block without data to: all coefficients 0, level-shifted.
GRAY_FILL = 128
_EOI = b"\xff\xd9"


def check_jpeg_codestream(data: bytes) -> bytes:
    """``data`` refused or passed on from the JPEG's markers (with its end-of-image
    marker appended when a sequential JPEG lacks it); other formats pass unchanged."""
    frame = read_jpeg(data)
    if frame is None:
        return data
    needed = frame.minimum_entropy_bytes()
    if frame.entropy_bytes < needed:
        raise ImageDecodeError(
            "corrupt",
            f"The JPEG's frame header claims {frame.width}x{frame.height} pixels, but its "
            f"image data ({frame.entropy_bytes} bytes) cannot hold that many (at least "
            f"{needed} bytes): the header is wrong or the file is cut short.",
        )
    if scan_passes(frame) > MAX_SCAN_PASSES:
        raise ImageDecodeError("too_large", scan_bomb_message(frame))
    if not frame.complete and not frame.progressive:
        return data + _EOI
    return data


def scan_passes(frame: JpegFrame) -> float:
    """How many times a progressive JPEG's scans pass over its image (0 if sequential:
    one scan per component, decoded once)."""
    if not frame.progressive:
        return 0.0
    return frame.scan_blocks / max(1, frame.blocks)


def scan_bomb_message(frame: JpegFrame) -> str:
    return (
        f"This progressive JPEG has {frame.scans} scans, {scan_passes(frame):.0f} passes "
        f"over the image for its decoder; at most {MAX_SCAN_PASSES} are allowed (ordinary "
        "encoders make about 5). Save it as a baseline JPEG or a PNG."
    )


def ends_in_gray_fill(image: Image.Image) -> bool:
    """True when the image's last 8x8 block (bottom right, as stored) is exactly the
    decoder's fill: the data ended before it. 8-bit gray and RGB only."""
    if image.mode not in ("L", "RGB"):
        return False
    width, height = image.size
    left = width - ((width - 1) % 8 + 1)
    top = height - ((height - 1) % 8 + 1)
    corner = np.asarray(image.crop((left, top, width, height)))
    return bool(corner.size) and bool((corner == GRAY_FILL).all())
