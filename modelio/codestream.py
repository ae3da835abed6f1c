"""What a compressed codestream says about itself, read from its markers, not decoded.

A container's header can lie about what its decoder will do: a JPEG frame header (SOF)
patched to 6000 x 6000 over the data of a 205 x 586 radiograph decoded to a picture of
mostly gray fill; a progressive JPEG whose one small scan is repeated 3,000 times cost
20 s of CPU; a DICOM whose Rows and Columns say 1760 x 1760 carried a JPEG 2000
codestream of 16000 x 16000 that took 1.7 GB to decode. The decoders believe their own
codestream, so the checks before decoding must read it too. Only marker segments are
parsed (a few microseconds); the entropy-coded data are skipped with one regular
expression search per scan.

- :func:`read_jpeg`: the frame (SOFn: size, components, sampling), the scans (SOS) and
  how many entropy-coded bytes follow them; JPEG-LS (SOF55) alike.
- :func:`read_j2k_size`: the image size and components from a JPEG 2000 codestream's
  SIZ marker segment (HTJ2K uses the same one).
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass

SOI = b"\xff\xd8"
#: Start-of-frame markers of the DCT and lossless JPEG processes (not DHT C4, JPG C8,
#: DAC CC), and JPEG-LS's SOF55 (F7).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA})
_HUFFMAN_DCT = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended, progressive; Huffman
_HUFFMAN_LOSSLESS = 0xC3
_SOS, _EOI, _DNL = 0xDA, 0xD9, 0xDC
#: Markers without a length: TEM, RST0-7, SOI, EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, 0xD9})
#: A marker inside entropy-coded data: 0xFF not followed by a stuffed 0x00, a restart
#: marker (RSTn, part of the data) or another 0xFF (fill).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
#: JPEG-LS stuffs differently: 0xFF followed by a byte under 0x80 is data.
_NEXT_MARKER_LS = re.compile(rb"\xff[\x80-\xcf\xd8-\xfe]")
_JPEG_LS = 0xF7

J2K_SOC_SIZ = b"\xff\x4f\xff\x51"


@dataclass(frozen=True)
class JpegFrame:
    """A JPEG's frame header and scans as its markers give them."""

    marker: int  # the SOFn code (0xC0 baseline, 0xC2 progressive, 0xF7 JPEG-LS, ...)
    width: int
    height: int  # 0 when a DNL marker gives it later (rare; not checked then)
    sampling: tuple[tuple[int, int], ...]  # (horizontal, vertical) per component
    scans: int
    scan_blocks: int  # 8x8 blocks the scans visit together: what progressive decoding costs
    entropy_bytes: int  # bytes of entropy-coded data after the scans' headers
    complete: bool  # an EOI marker ends the data (else the file stops inside them)

    @property
    def progressive(self) -> bool:
        return self.marker in _PROGRESSIVE

    def component_blocks(self, index: int) -> int:
        """8x8 blocks of component ``index`` (without an interleaved scan's padding)."""
        h_max = max(h for h, _ in self.sampling)
        v_max = max(v for _, v in self.sampling)
        h, v = self.sampling[index]
        columns = math.ceil(math.ceil(self.width * h / h_max) / 8)
        rows = math.ceil(math.ceil(self.height * v / v_max) / 8)
        return columns * rows

    @property
    def blocks(self) -> int:
        return sum(self.component_blocks(i) for i in range(len(self.sampling)))

    def minimum_entropy_bytes(self) -> int:
        """The fewest bytes of entropy-coded data that can hold the frame, or 0 when no
        bound is known (arithmetic coding, JPEG-LS, hierarchical, height from DNL).

        Every Huffman code is at least one bit. A sequential DCT frame codes each block's
        DC difference and then its AC coefficients, which end in an end-of-block code
        unless all 63 are coded: two bits a block at the least. A progressive one codes
        each block's DC difference in its first DC scan (later scans may skip blocks in
        runs): one bit. A lossless frame codes each sample. Fewer bytes than this cannot
        be the image the frame header claims: the decoder would fill the rest with gray.
        """
        if self.height == 0:
            return 0
        if self.marker in _HUFFMAN_DCT:
            bits_per_block = 1 if self.progressive else 2
            return self.blocks * bits_per_block // 8
        if self.marker == _HUFFMAN_LOSSLESS:
            return self.width * self.height * len(self.sampling) // 8
        return 0


def read_jpeg(data: bytes) -> JpegFrame | None:
    """The frame and scans of a JPEG (or JPEG-LS) codestream starting at ``data[0]``;
    None when it is not one or its markers are malformed (the decoder then says why)."""
    if not data.startswith(SOI):
        return None
    try:
        return _walk(data)
    except (struct.error, IndexError, ValueError):
        return None


def _walk(data: bytes) -> JpegFrame | None:
    frame: tuple[int, int, int, tuple[tuple[int, int], ...], tuple[int, ...]] | None = None
    scans = scan_blocks = entropy = 0
    complete = False
    position = len(SOI)
    end = len(data)
    while position < end:
        position = _next_marker(data, position)
        if position >= end:
            break
        marker = data[position]
        position += 1
        if marker == _EOI:
            complete = True
            break
        if marker in _STANDALONE:
            continue
        (length,) = struct.unpack_from(">H", data, position)
        segment = data[position + 2 : position + length]
        if len(segment) != length - 2:
            raise ValueError("a marker segment runs past the end")
        position += length
        if marker in _SOF_MARKERS and frame is None:
            height, width, count = struct.unpack_from(">HHB", segment, 1)
            ids = tuple(segment[6 + 3 * i] for i in range(count))
            sampling = tuple(
                (segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 0x0F) for i in range(count)
            )
            if count == 0 or min(min(s) for s in sampling) == 0:
                raise ValueError("invalid sampling factors")
            frame = (marker, width, height, sampling, ids)
        elif marker == _SOS:
            if frame is None:
                raise ValueError("a scan before the frame header")
            scans += 1
            in_scan = {segment[1 + 2 * i] for i in range(segment[0])}
            scan_blocks += _blocks_of(frame, in_scan)
            pattern = _NEXT_MARKER_LS if frame[0] == _JPEG_LS else _NEXT_MARKER
            found = pattern.search(data, position)
            stop = end if found is None else found.start()
            entropy += stop - position
            position = stop
    if frame is None:
        return None
    marker, width, height, sampling, _ids = frame
    return JpegFrame(marker, width, height, sampling, scans, scan_blocks, entropy, complete)


def _next_marker(data: bytes, position: int) -> int:
    """Where the code of the next marker at or after ``position`` is (``len(data)`` if
    none). libjpeg skips stray bytes up to the next 0xFF (with a warning) and any 0xFF
    fill, so this does too: else a byte before each scan would hide a scan bomb."""
    found = data.find(b"\xff", position)
    if found == -1:
        return len(data)
    while found < len(data) and data[found] == 0xFF:
        found += 1
    return found


def _blocks_of(
    frame: tuple[int, int, int, tuple[tuple[int, int], ...], tuple[int, ...]],
    components: set[int],
) -> int:
    marker, width, height, sampling, ids = frame
    probe = JpegFrame(marker, width, height, sampling, 0, 0, 0, False)
    return sum(probe.component_blocks(i) for i, cid in enumerate(ids) if cid in components)


@dataclass(frozen=True)
class J2kSize:
    """A JPEG 2000 image's size and components from its SIZ marker segment."""

    width: int
    height: int
    components: int
    bits: int  # the largest component precision


def read_j2k_size(data: bytes) -> J2kSize | None:
    """SIZ of a JPEG 2000 codestream starting at ``data[0]`` (SOC then SIZ, as Part 1
    requires), or None when it is not one."""
    if not data.startswith(J2K_SOC_SIZ):
        return None
    try:
        x, y, x0, y0 = struct.unpack_from(">IIII", data, 8)
        (count,) = struct.unpack_from(">H", data, 40)
        depths = [(data[42 + 3 * i] & 0x7F) + 1 for i in range(count)]
    except (struct.error, IndexError):
        return None
    if count == 0 or x <= x0 or y <= y0:
        return None
    return J2kSize(width=x - x0, height=y - y0, components=count, bits=max(depths))
