"""Image decoding and resizing: the one definition shared by training and serving.

The trainer builds its datasets with :func:`load_array` and the service feeds the model
with the very same function, so the model sees at inference exactly what it saw in
training. :func:`decode` is the one entry point: DICOM files (recognised by their
``DICM`` marker, not by name) go to :mod:`modelio.dicom`, everything else to Pillow. Only
numpy, Pillow and pydicom are used here: the service and the web page can import this
module without TensorFlow.

The model itself takes raw pixels (float32 in 0..255, NHWC); scaling to 0..1 lives inside
the model, once.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from modelio.dicom import DicomFacts, decode_dicom, is_dicom
from modelio.errors import DecodeNote, ErrorKind, ImageDecodeError
from modelio.jpeg_checks import JPEG_FORMATS, check_jpeg_codestream, ends_in_gray_fill

__all__ = [
    "ACCEPTED_FORMATS",
    "ACCEPTED_MEDIA_TYPES",
    "ACCEPTED_SUFFIXES",
    "DEFAULT_MAX_PIXELS",
    "PREPROCESSING_DESCRIPTION",
    "ColorMode",
    "DecodeNote",
    "Decoded",
    "DicomFacts",
    "ErrorKind",
    "ImageDecodeError",
    "InputSpec",
    "colourfulness",
    "decode",
    "decode_image",
    "is_dicom",
    "load_array",
    "to_array",
]

#: Container formats a user may hand us (Pillow's names). MPO is how Pillow names some
#: camera JPEGs.
ACCEPTED_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP"})
ACCEPTED_MEDIA_TYPES: tuple[str, ...] = (
    "image/jpeg",
    "image/png",
    "image/bmp",
    "image/tiff",
    "image/webp",
    "application/dicom",
)
#: File name suffixes taken as images. DICOM files often have none (or a UID for a
#: name): the trainer also takes any file that starts like DICOM (:func:`is_dicom`).
ACCEPTED_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom"}
)

#: Refuse images with more pixels than this before decoding them (decompression bombs).
DEFAULT_MAX_PIXELS = 40_000_000

ColorMode = Literal["grayscale", "rgb"]


@dataclass(frozen=True)
class InputSpec:
    """What the model takes: raw pixels of this size, float32 in 0..255."""

    height: int
    width: int
    channels: int

    @property
    def color_mode(self) -> ColorMode:
        return "grayscale" if self.channels == 1 else "rgb"

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "dtype": "float32",
            "value_range": [0.0, 255.0],
            "layout": "NHWC",
            "color_mode": self.color_mode,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        return cls(
            height=int(data["height"]), width=int(data["width"]), channels=int(data["channels"])
        )


#: Written into metadata.json so a reader knows what a client must do to feed the model.
PREPROCESSING_DESCRIPTION: dict[str, str] = {
    "decode": "Pillow; EXIF orientation applied",
    "dicom": (
        "pydicom, first frame only: Modality LUT (rescale), then the VOI LUT or the first "
        "Window Center/Width (else a 0.5-99.5 percentile window), MONOCHROME1 inverted, "
        "Bits Stored respected, scaled to 8-bit"
    ),
    "alpha": "composited onto black",
    "high_bit_depth": "16-bit and float images linearly stretched from their min..max to 0..255",
    "color": "grayscale = ITU-R 601 luma; rgb = colour kept, gray images replicated to 3",
    "resize": "bilinear (antialiased when shrinking) to height x width; aspect ratio not kept",
    "scale": "none: the model takes float32 0..255 and rescales inside",
}


@dataclass(frozen=True)
class Decoded:
    """A decoded upload: the 8-bit image, DICOM facts (None for other formats) and notes
    a reader of the answer should see (e.g. only the first of several frames was used)."""

    image: Image.Image
    dicom: DicomFacts | None = None
    notes: tuple[DecodeNote, ...] = ()


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode encoded bytes (any accepted format, DICOM included) into an upright 8-bit
    ``L`` or ``RGB`` image, with what the caller should pass on about it.

    Raises :class:`ImageDecodeError` for empty input, non-images, unsupported formats or
    DICOM transfer syntaxes, DICOM objects without an image, truncated or corrupt files
    and images with more than ``max_pixels`` pixels; the pixel count is checked from the
    header, before any pixel data is decoded.
    """
    if not data:
        raise ImageDecodeError("empty", "The file is empty.")
    if is_dicom(data):
        decoded = decode_dicom(data, max_pixels)
        return Decoded(decoded.image, decoded.facts, decoded.notes)
    return Decoded(_decode_with_pillow(data, max_pixels))


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """:func:`decode`'s image alone, for callers that need no DICOM facts or notes."""
    return decode(data, max_pixels).image


def _decode_with_pillow(data: bytes, max_pixels: int) -> Image.Image:
    """Every non-DICOM format: through Pillow, header checked before the pixels."""
    data = check_jpeg_codestream(data)
    try:
        with warnings.catch_warnings():  # our own pixel limit below replaces Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not_image", "The file is not an image Pillow can read.") from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too_large", str(exc)) from exc
    except (OSError, ValueError, SyntaxError) as exc:  # broken headers
        raise ImageDecodeError("corrupt", f"The image header is broken: {exc}") from exc
    if image.format not in ACCEPTED_FORMATS:
        raise ImageDecodeError(
            "not_image",
            f"Image format {image.format} is not accepted; use JPEG, PNG, BMP, TIFF, WebP "
            "or DICOM.",
        )
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            "too_large",
            f"The image has {width}x{height} pixels, more than the {max_pixels} allowed.",
        )
    try:
        image.load()
        if image.format in JPEG_FORMATS and ends_in_gray_fill(image):
            raise ImageDecodeError(
                "corrupt",
                "The JPEG's data end before its last row (the rest would be the decoder's "
                "gray fill): the file is truncated, or its frame header claims more pixels "
                "than it holds.",
            )
        return _to_8bit(_upright(image))
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too_large", str(exc)) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError("corrupt", f"The image data is truncated or corrupt: {exc}") from exc


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # Pillow raises struct.error, TypeError, ... on malformed EXIF
        return image


def _to_8bit(image: Image.Image) -> Image.Image:
    """Bring any Pillow mode to 8-bit ``L`` or ``RGB``."""
    if image.mode in {"L", "RGB"}:
        return image
    if image.mode in {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}:
        return Image.fromarray(_stretch(np.asarray(image, dtype=np.float64)))
    if image.mode == "1":
        return image.convert("L")
    if image.mode in {"RGBA", "LA", "PA", "P", "La", "RGBa"} or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def _stretch(pixels: np.ndarray) -> np.ndarray:
    """High-bit-depth or float values linearly from their finite min..max to 0..255.

    Non-finite values (a float TIFF's NaN or infinite pixels) are left out of the range,
    else one of them turned the whole image black; they are then shown as its ends
    (NaN and -inf black, +inf white). An image without a finite value is refused.
    (Pillow's modes hold at most float32, whose span fits float64.)
    """
    finite = np.isfinite(pixels)
    if not finite.any():
        raise ImageDecodeError(
            "corrupt",
            "The image holds no finite pixel values (all are NaN or infinite), so there is "
            "nothing to show or classify.",
        )
    low = float(np.min(pixels, where=finite, initial=np.inf))
    high = float(np.max(pixels, where=finite, initial=-np.inf))
    np.nan_to_num(pixels, copy=False, nan=low, posinf=high, neginf=low)
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip((pixels - low) * scale, 0, 255).round().astype(np.uint8)


def to_array(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """Resize a decoded image to the model's input: float32, ``(H, W, C)``, 0..255."""
    target = "L" if spec.channels == 1 else "RGB"
    if image.mode != target:
        image = image.convert(target)
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    return pixels


def load_array(data: bytes, spec: InputSpec, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Encoded bytes to model input; the single path used by trainer and service."""
    return to_array(decode_image(data, max_pixels=max_pixels), spec)


def colourfulness(image: Image.Image) -> float:
    """Hasler and Suesstrunk's colourfulness metric (0 for a gray image, ~100+ for vivid).

    Radiographs are gray; a strongly coloured upload is probably a photo or a chart.
    """
    if image.mode != "RGB":
        return 0.0
    # Statistics of 4096 sampled pixels: nearest-neighbour sampling costs a few percent of
    # a filtered resize, which on the service's hot path cost as much as the decode.
    small = np.asarray(image.resize((64, 64), Image.Resampling.NEAREST), dtype=np.float32)
    red, green, blue = small[..., 0], small[..., 1], small[..., 2]
    rg = red - green
    yb = 0.5 * (red + green) - blue
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(abs(rg.mean()), abs(yb.mean())))
