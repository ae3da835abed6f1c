"""What a decoder says when an input cannot become a model input, or can with a caveat.

In a module of its own so that :mod:`modelio.images` (which dispatches to DICOM) and
:mod:`modelio.dicom` (which raises these) do not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Why an input was refused; the service maps each kind to one HTTP status and code.
#: ``unsupported_encoding``: a DICOM transfer syntax no installed codec decodes (415);
#: ``no_pixels``: a DICOM object that holds no image, such as a structured report (422).
ErrorKind = Literal[
    "empty", "not_image", "corrupt", "too_large", "unsupported_encoding", "no_pixels"
]


class ImageDecodeError(ValueError):
    """An input that cannot become a model input; ``kind`` says why, for status codes.

    Messages are written for a person and never quote a DICOM element's value (the file
    may carry a patient's name): decoders raise them ``from None`` so that no library
    exception text rides along in a traceback either.
    """

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


@dataclass(frozen=True)
class DecodeNote:
    """Something a reader of the answer should know about how the image was decoded.

    ``code`` is stable (the service passes it on as a warning code); ``message`` is a
    sentence for a person.
    """

    code: Literal["multi_frame"]
    message: str
