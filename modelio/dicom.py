"""DICOM bytes to the 8-bit image a radiologist's viewer would show, and nothing personal.

Radiographs live in DICOM: 10 to 16-bit detector values with the display mapping written
beside them. A model trained on exported JPEGs saw what a viewer showed, so the same
mapping is applied here, in the viewer's order (PS3.4 N.2.1):

1. Modality LUT (Rescale Slope/Intercept, or a Modality LUT Sequence):
   :func:`pydicom.pixels.apply_modality_lut`.
2. VOI: the VOI LUT Sequence, else the first Window Center/Width
   (:func:`pydicom.pixels.apply_voi_lut`); when the file has neither (or only an invalid
   one) a robust window from the 0.5 and 99.5 percentiles of the pixel values, so a
   few saturated or dead pixels do not flatten the contrast.
3. MONOCHROME1 (bright = low values, as many CR plates are stored) inverted.
4. Scaled from the VOI's output range to 0..255, as an ``L`` image. RGB and YBR images
   (converted to RGB by pydicom) and PALETTE COLOR (expanded by its LUT) become ``RGB``.

Bits Stored is respected: pydicom clears the unused high bits of native pixel data
(``correct_unused_bits``, on by default), takes the codestream's precision for JPEG 2000
and JPEG-LS, and the windowing's output range follows Bits Stored and Pixel
Representation. Compressed data are decoded by pydicom's own pixel handlers with the
pylibjpeg plug-ins (JPEG baseline, extended and lossless, JPEG-LS, JPEG 2000, HTJ2K, RLE);
any other transfer syntax is refused as ``unsupported_encoding`` naming it.

Multi-frame objects: only the first frame is decoded, with a ``multi_frame`` note (the
model classifies one radiograph; which frame a reader means is not knowable here).

No patient data leave this module: the only facts returned are coded acquisition values
(Modality, Body Part Examined, View Position, Photometric Interpretation: passed on only
when they are one of the standard's defined terms, :mod:`modelio.dicom_terms`), the
geometry and the transfer syntax's registered name. Error messages are written here and
never quote an element's value; pydicom's exceptions are replaced (``from None``) rather
than wrapped, its warnings are suppressed while it reads, and its logger is kept quiet,
because pydicom's texts can quote values (an invalid Patient Name among them).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from modelio.codestream import read_j2k_size, read_jpeg
from modelio.dicom_terms import DEFINED_TERMS
from modelio.errors import DecodeNote, ImageDecodeError
from modelio.jpeg_checks import MAX_SCAN_PASSES, scan_bomb_message, scan_passes

#: A DICOM Part 10 file has a 128-byte preamble and then these four bytes.
PREAMBLE_LENGTH = 128
MAGIC = b"DICM"
#: A Part 10 file whose preamble was stripped starts with its File Meta Information Group
#: Length, (0002,0000) in explicit VR little endian: cheap to recognise and unambiguous,
#: and it still says its transfer syntax. Bare datasets without file meta are not taken.
_META_WITHOUT_PREAMBLE = b"\x02\x00\x00\x00UL"
#: The robust window used when the file gives none: these percentiles of the values.
PERCENTILE_WINDOW = (0.5, 99.5)
#: The percentiles are taken on at most about this many pixels (every n-th one): on a
#: 3-megapixel plate that is within a gray level of all of them, at a third of the time.
_PERCENTILE_SAMPLES = 1_000_000
#: The largest value the windowing (in float32) holds; a modality output beyond is refused.
_FLOAT32_MAX = float(np.finfo(np.float32).max)

# pydicom logs what it warns about, and some of its messages quote element values (an
# invalid Patient Name, a too-long Patient ID). Nothing of that may reach a log or stderr:
# its logger is silenced, and its warnings are ignored for the whole process, because the
# local suppression around each decode (_quiet) is not thread-safe (warnings filters are
# global) and the service decodes in several threads at once.
_PYDICOM_LOG = logging.getLogger("pydicom")
_PYDICOM_LOG.setLevel(logging.CRITICAL + 1)
_PYDICOM_LOG.propagate = False
_PYDICOM_MODULES = r"pydicom(\.|$)"
warnings.filterwarnings("ignore", module=_PYDICOM_MODULES)


def is_dicom(data: bytes) -> bool:
    """True for a DICOM Part 10 file: ``DICM`` after the preamble, or its file meta first."""
    return (
        data[PREAMBLE_LENGTH : PREAMBLE_LENGTH + len(MAGIC)] == MAGIC
        or data[: len(_META_WITHOUT_PREAMBLE)] == _META_WITHOUT_PREAMBLE
    )


@dataclass(frozen=True)
class DicomFacts:
    """Non-identifying facts about a decoded DICOM image, for the reader of an answer.

    The coded values are None when the file lacks them or holds something that is not a
    DICOM code string there; ``windowing`` says which display mapping was applied.
    """

    modality: str | None
    body_part_examined: str | None
    view_position: str | None
    photometric_interpretation: str | None
    rows: int
    columns: int
    bits_stored: int
    frames: int
    transfer_syntax: str
    windowing: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DicomImage:
    """A decoded DICOM image (8-bit ``L`` or ``RGB``), its facts and any notes."""

    image: Image.Image
    facts: DicomFacts
    notes: tuple[DecodeNote, ...]


@dataclass(frozen=True)
class Geometry:
    """The size of what decoding will produce, from the header alone."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    frames: int


def read_geometry(data: bytes) -> Geometry | None:
    """Rows, columns, samples, bits and frames from the header, or None when unreadable
    (decoding then says why). For a cost estimate before any pixel is decoded."""
    try:
        with _quiet():
            ds = _read(data, stop_before_pixels=True)
            return Geometry(
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                samples=int(ds.get("SamplesPerPixel", 1) or 1),
                bits_allocated=int(ds.BitsAllocated),
                frames=_frames(ds),
            )
    except Exception:  # any header problem: decode_dicom gives the precise error
        return None


def decode_dicom(data: bytes, max_pixels: int) -> DicomImage:
    """Decode the first frame of a DICOM image as a viewer displays it.

    Raises :class:`ImageDecodeError`: ``corrupt`` for an unreadable or truncated file,
    ``no_pixels`` for an object without an image (a structured report, a waveform),
    ``too_large`` when Rows x Columns exceeds ``max_pixels`` (checked before the pixel
    data are decoded) and ``unsupported_encoding`` for a transfer syntax that no
    installed codec decodes.
    """
    # pydicom converts element values when they are first read, and warns (quoting the
    # value) about invalid ones: everything that touches the dataset runs in here.
    try:
        with _quiet():
            return _decode(data, max_pixels)
    except ImageDecodeError:
        raise
    except Exception:
        # Anything unforeseen: its text may quote an element, and an unexpected exception
        # would be logged with it by the service's last-resort handler. Replaced here.
        raise ImageDecodeError(
            "corrupt", "The DICOM file could not be read: it is malformed or corrupt."
        ) from None


@contextmanager
def _quiet() -> Iterator[None]:
    """pydicom's warnings silenced here too: a caller's own filters (pytest's "error")
    come before the process-wide one. Only pydicom's: ``catch_warnings`` is not
    thread-safe, and two decodes overlapping in threads can leave the inner filter in
    place for the whole process, which must then be no more than the process-wide one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=_PYDICOM_MODULES)
        yield


def _decode(data: bytes, max_pixels: int) -> DicomImage:
    try:
        ds = _read(data, stop_before_pixels=False)
    except Exception:
        raise ImageDecodeError(
            "corrupt",
            "The file starts like a DICOM file, but its header cannot be read: it is "
            "truncated or corrupt.",
        ) from None
    _check_has_image(ds)
    rows, columns, samples, bits_stored, photometric = _image_attributes(ds)
    if rows * columns > max_pixels:
        raise ImageDecodeError(
            "too_large",
            f"The DICOM image has {columns}x{rows} pixels, more than the {max_pixels} allowed.",
        )
    syntax = _check_transfer_syntax(ds)
    _check_codestream(ds, syntax, rows, columns)
    try:
        pixels = pixel_array(ds, index=0)  # the first frame only
    except Exception:
        raise ImageDecodeError(
            "corrupt",
            f"The DICOM pixel data ({_syntax_name(syntax)}) could not be decoded: they are "
            "truncated or corrupt.",
        ) from None
    try:
        image, windowing = _display(pixels, ds, samples, bits_stored, photometric)
    except ImageDecodeError:
        raise
    except Exception:
        raise ImageDecodeError(
            "corrupt",
            "The DICOM image's display values (rescale, window or lookup tables) are invalid.",
        ) from None
    frames = _frames(ds)
    notes: tuple[DecodeNote, ...] = ()
    if frames > 1:
        notes = (
            DecodeNote(
                "multi_frame",
                f"This DICOM file holds {frames} frames; only the first was classified.",
            ),
        )
    facts = DicomFacts(
        modality=_code_string(ds, "Modality"),
        body_part_examined=_code_string(ds, "BodyPartExamined"),
        view_position=_code_string(ds, "ViewPosition"),
        photometric_interpretation=_code_string(ds, "PhotometricInterpretation"),
        rows=rows,
        columns=columns,
        bits_stored=bits_stored,
        frames=frames,
        transfer_syntax=_syntax_name(syntax),
        windowing=windowing,
    )
    return DicomImage(image=image, facts=facts, notes=notes)


def _read(data: bytes, *, stop_before_pixels: bool) -> Dataset:
    """Parse the file; ``force`` only for one whose preamble was stripped (:func:`is_dicom`
    has checked that its file meta comes first)."""
    force = data[PREAMBLE_LENGTH : PREAMBLE_LENGTH + len(MAGIC)] != MAGIC
    return dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels, force=force)


def _check_has_image(ds: Dataset) -> None:
    """Refuse an object without an image (422), telling a truncated image from a report."""
    if "PixelData" in ds:
        return
    if len(ds) == 0 or "Rows" in ds or "Columns" in ds:
        # An image's header without its pixels, or nothing at all after the file meta:
        # pydicom stops quietly at a cut-off element (and drops the whole dataset when
        # the cut is inside encapsulated pixel data).
        raise ImageDecodeError(
            "corrupt",
            "This DICOM file's image data are missing or cut off: the file is probably truncated.",
        )
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        what = "floating-point values (a parametric map), not a radiograph"
    else:
        sop_class = _registered_uid_name(ds.get("SOPClassUID"))
        what = f"no image: it is a {sop_class} object" if sop_class else "no image pixel data"
    raise ImageDecodeError("no_pixels", f"This DICOM file holds {what}.")


def _image_attributes(ds: Dataset) -> tuple[int, int, int, int, str]:
    """Rows, columns, samples per pixel, bits stored and photometric interpretation,
    checked to be present and sane before any pixel is decoded."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits_allocated = int(ds.BitsAllocated)
        bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
        photometric = str(ds.PhotometricInterpretation).strip().upper()
    except Exception:
        raise ImageDecodeError(
            "corrupt",
            "The DICOM image lacks a readable Rows, Columns, Bits Allocated or Photometric "
            "Interpretation, so its pixels cannot be interpreted.",
        ) from None
    if rows < 1 or columns < 1 or samples not in (1, 3) or not 1 <= bits_stored <= bits_allocated:
        raise ImageDecodeError(
            "corrupt",
            "The DICOM image's size, samples per pixel or bit depth are inconsistent "
            f"({columns}x{rows}, {samples} samples, {bits_stored} of {bits_allocated} bits).",
        )
    return rows, columns, samples, bits_stored, photometric


def _check_codestream(ds: Dataset, syntax: UID, rows: int, columns: int) -> None:
    """Refuse (``too_large``, 413) compressed pixel data whose own codestream is not the
    image the header describes, before its decoder allocates for it.

    The decoders believe the codestream: a JPEG 2000 whose SIZ said 16000 x 16000 under
    Rows and Columns of 1760 took 1.7 GB of memory before the mismatch was noticed. So the
    first frame's own header is read (SIZ for JPEG 2000 and HTJ2K, SOF for the JPEG
    family and JPEG-LS) and must give the header's size; a progressive JPEG inside must
    not be a scan bomb either (:mod:`modelio.jpeg_checks`). Pixel data that are not
    encapsulated, or a codestream these parsers do not know (RLE), pass unchanged.
    """
    if not syntax.is_encapsulated:
        return
    try:  # the whole first frame: a scan bomb's scans may sit in a later fragment
        first = next(generate_frames(ds.PixelData, number_of_frames=_frames(ds)))
    except Exception:
        return  # pixel_array says what is wrong with the encapsulation
    j2k = read_j2k_size(first)
    jpeg = read_jpeg(first) if j2k is None else None
    if j2k is not None:
        kind, size = "JPEG 2000", (j2k.width, j2k.height)
    elif jpeg is not None:
        kind, size = "JPEG", (jpeg.width, jpeg.height)
    else:
        return
    if size != (columns, rows):
        raise ImageDecodeError(
            "too_large",
            f"The DICOM header says the image has {columns}x{rows} pixels, but its {kind} "
            f"data hold {size[0]}x{size[1]}: the file contradicts itself, and its decoder "
            "would allocate for the larger one. It is refused before decoding.",
        )
    if jpeg is not None and scan_passes(jpeg) > MAX_SCAN_PASSES:
        raise ImageDecodeError("too_large", scan_bomb_message(jpeg))


def _check_transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax, refused as ``unsupported_encoding`` unless a codec is here."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not syntax:
        raise ImageDecodeError(
            "corrupt", "The DICOM file does not say its transfer syntax (no file meta header)."
        )
    syntax = UID(str(syntax))
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise ImageDecodeError(
            "unsupported_encoding",
            f"The DICOM pixel data are encoded as {_syntax_name(syntax)}, which no "
            "installed decoder reads. Accepted: uncompressed, deflated, RLE, JPEG (baseline, "
            "extended, lossless), JPEG-LS, JPEG 2000 and HTJ2K. Export the image with one "
            "of these.",
        )
    return syntax


def _syntax_name(syntax: UID) -> str:
    """The registered name and UID, e.g. 'JPEG 2000 Image Compression
    (1.2.840.10008.1.2.4.91)'; a malformed UID is not echoed (it could be anything)."""
    if not syntax.is_valid:
        return "a malformed transfer syntax UID"
    name = _registered_uid_name(syntax)
    return f"{name} ({syntax})" if name else f"the unknown transfer syntax {syntax}"


def _registered_uid_name(value: object) -> str | None:
    """The DICOM dictionary's name of a registered UID, else None (never the raw value)."""
    if not value:
        return None
    uid = UID(str(value))
    return uid.name if uid.is_valid and uid.name != str(uid) else None


def _code_string(ds: Dataset, keyword: str) -> str | None:
    """A coded attribute's value when it is one of the standard's defined terms for it
    (:mod:`modelio.dicom_terms`), else None: any other code string may be a name."""
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value in DEFINED_TERMS[keyword] else None


def _frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except Exception:  # an unreadable Number of Frames: one frame is decoded either way
        return 1


def _display(
    pixels: np.ndarray, ds: Dataset, samples: int, bits_stored: int, photometric: str
) -> tuple[Image.Image, str]:
    """Stored values to the 8-bit image a viewer shows, and how they were mapped."""
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        top = 255.0 if rgb.dtype == np.uint8 else 65535.0
        return Image.fromarray(_to_uint8(rgb, 0.0, top), "RGB"), "palette colour lookup table"
    if samples == 3:  # RGB, or YBR that pydicom has converted to RGB
        top = float(2**bits_stored - 1)
        return Image.fromarray(_to_uint8(pixels, 0.0, top), "RGB"), "none (colour image)"
    values = apply_modality_lut(pixels, ds)
    _check_showable(values)
    shown, low, high, windowing = _voi(values, ds)
    gray = _to_uint8(shown, low, high)
    if photometric == "MONOCHROME1":
        np.subtract(255, gray, out=gray)
    return Image.fromarray(gray, "L"), windowing


def _check_showable(values: np.ndarray) -> None:
    """Refuse values the Modality LUT made unshowable: not finite, or beyond float32.

    A Rescale Slope of 1e308 or NaN (as a crafted or broken file may carry) turned every
    pixel into an infinity or NaN, or into numbers float32 windowing cannot hold, and the
    image came out black and was classified. Such a file's display mapping is wrong, not
    its image: it is refused as corrupt rather than guessed at. (NaN fails both bounds.)
    """
    low, high = values.min(), values.max()
    if not (low >= -_FLOAT32_MAX and high <= _FLOAT32_MAX):
        raise ImageDecodeError(
            "corrupt",
            "The DICOM image's Rescale Slope and Intercept (or Modality LUT) turn its pixels "
            "into values that are not finite numbers or are far too large, so it cannot be "
            "shown as a viewer would; the file's display values are probably corrupt.",
        )


def _voi(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float, float, str]:
    """The file's VOI LUT or first window when it has a usable one, else the percentile
    window: the mapped values, their output range and a description."""
    try:
        from_file = _file_voi(values, ds)
    except (ValueError, TypeError, IndexError, AttributeError, KeyError, NotImplementedError):
        from_file = None  # an invalid window or LUT (width 0, unknown function, ...)
        reason = "the file's window is invalid"
    else:
        reason = "none in the file"
    if from_file is not None:
        return from_file
    sample = values.ravel()[:: max(1, values.size // _PERCENTILE_SAMPLES)]
    low, high = (float(v) for v in np.percentile(sample, PERCENTILE_WINDOW))
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    lo_pct, hi_pct = PERCENTILE_WINDOW
    return values, low, high, f"{lo_pct:g}-{hi_pct:g} percentile window ({reason})"


def _file_voi(values: np.ndarray, ds: Dataset) -> tuple[np.ndarray, float, float, str] | None:
    """The VOI LUT Sequence, else the first Window Center/Width, through pydicom's
    :func:`~pydicom.pixels.apply_voi_lut`; None when the file has neither or a flat one."""
    sequence = ds.get("VOILUTSequence")
    if sequence and None not in (sequence[0].get("LUTDescriptor"), sequence[0].get("LUTData")):
        entries = int(sequence[0].LUTDescriptor[0]) or 2**16
        first = int(sequence[0].LUTDescriptor[1])
        table = apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), ds, index=0)
        low, high = float(table.min()), float(table.max())
        if high <= low:
            return None
        mapped = apply_voi_lut(np.rint(values).astype(np.int64), ds, index=0)
        return mapped, low, high, "VOI LUT from the file"
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = (_first_value(ds[keyword].value) for keyword in ("WindowCenter", "WindowWidth"))
    # The window's output range, found by sending values far outside it through the same
    # function: pydicom derives it from Bits Stored, Pixel Representation and the
    # rescale, and this keeps the two in step.
    reach = 100.0 * abs(width) + 2.0
    ends = apply_voi_lut(np.array([center - reach, center + reach]), ds, index=0)
    low, high = float(ends.min()), float(ends.max())
    if not high > low:
        return None
    mapped = apply_voi_lut(values, ds, index=0)
    return mapped, low, high, f"window center {center:g}, width {width:g}"


def _first_value(value: Any) -> float:
    """The first of a multi-valued element (several windows: the first is the default)."""
    return float(value[0] if isinstance(value, MultiValue) else value)


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low..high`` linearly to 0..255 (clipped, rounded); a flat range gives black."""
    scale = 255.0 / (high - low) if high > low else 0.0
    out = np.subtract(values, low, dtype=np.float32)
    np.multiply(out, scale, out=out)
    np.clip(out, 0.0, 255.0, out=out)
    return np.rint(out, out=out).astype(np.uint8)
