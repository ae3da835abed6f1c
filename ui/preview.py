"""The page's local preview of an upload: decoded once, under the service's decode budget.

The preview is decoded here by the shared :mod:`modelio.images` (so a DICOM is windowed
as a viewer shows it), but before that it is priced by :mod:`modelio.budget` exactly as
the service prices an upload: a 77 KB 16-bit PNG of 6320x6320 that the service refuses
cost the page 3.2 s and +1 GiB of memory, on every rerun (each move of the heatmap
slider). Now a file over the budget gets no preview and the service's own sentence, and
every preview is cached by the upload's SHA-256, so a rerun decodes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from PIL import Image

from modelio.budget import DEFAULT_MAX_DECODE_BYTES, check_decode_cost
from modelio.images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode

#: Longest side of the preview: big enough to read, small enough to sit beside the chart.
PREVIEW_MAX_PX = 480
#: Said when a file cannot be decoded for a reason the decoder does not put in words.
UNREADABLE = "this file could not be read as an image."
#: Previews kept across reruns (each at most 480 px a side, under 1 MB).
CACHED_PREVIEWS = 64


@dataclass(frozen=True)
class Preview:
    """A bounded, upright copy of the upload, or why there is none."""

    image: Image.Image | None
    reason: str | None = None


def make_preview(data: bytes) -> Preview:
    """Price, then decode and shrink, the upload with the service's default limits.

    Only for display: the service does the real decoding. Nothing here raises: a
    refusal becomes the reason shown instead of the image.
    """
    try:
        check_decode_cost(data, DEFAULT_MAX_DECODE_BYTES, DEFAULT_MAX_PIXELS)
        image = decode(data, max_pixels=DEFAULT_MAX_PIXELS).image
        image.thumbnail((PREVIEW_MAX_PX, PREVIEW_MAX_PX))
        return Preview(image)
    except ImageDecodeError as exc:
        return Preview(None, str(exc))
    except Exception:  # a preview must never break the page
        return Preview(None, UNREADABLE)


def preview(data: bytes) -> Image.Image | None:
    """The preview image alone (None when there is none)."""
    return make_preview(data).image


@st.cache_data(max_entries=CACHED_PREVIEWS, show_spinner=False)
def cached_preview(digest: str, _data: bytes) -> Preview:
    """:func:`make_preview`, cached by the upload's digest (the bytes themselves are not
    hashed again on each rerun: the leading underscore keeps them out of the key)."""
    return make_preview(_data)
