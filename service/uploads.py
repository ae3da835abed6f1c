"""Uploaded files from a ``multipart/form-data`` body, read straight into bytes.

FastAPI's ``UploadFile`` parameters spool every part into a ``SpooledTemporaryFile``,
validate it and close it in an exit stack: about 70 us of the ~1 ms the service adds
to the bare model on ``/predict`` (measured in-process, inference stubbed). Uploads are
already bounded by the body-size limit, so here the parts are collected as bytes by
the same ``python-multipart`` parser Starlette uses, while the body streams in.

The routes that read files this way describe their form in OpenAPI with
:func:`openapi_form`, so ``/docs`` still shows a file picker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from service.errors import ServiceError

#: RFC 2046 (5.1.1): a boundary is 1 to 70 characters. python-multipart itself raises an
#: unhandled FormParserError above 256, so longer ones are refused here first.
MAX_BOUNDARY_LENGTH = 70


@dataclass
class FormFile:
    """One part of the form: the field it was sent as, its filename and its bytes."""

    field: str
    filename: str | None
    data: bytes


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)

    def as_file(self) -> FormFile:
        _, disposition = parse_options_header(self.headers.get(b"content-disposition", b""))
        filename = disposition.get(b"filename")
        return FormFile(
            field=disposition.get(b"name", b"").decode("utf-8", "replace"),
            filename=None if filename is None else filename.decode("utf-8", "replace"),
            data=b"".join(self.chunks),
        )


def _missing(field_name: str, hint: str = "") -> RequestValidationError:
    """The 422 FastAPI itself gives for a missing form field (same location and type)."""
    return RequestValidationError(
        [{"loc": ("body", field_name), "msg": f"Field required{hint}", "type": "missing"}]
    )


async def _parts(request: Request, boundary: bytes) -> list[_Part]:
    parts: list[_Part] = []
    name: list[bytes] = []
    value: list[bytes] = []

    def on_header_end() -> None:
        parts[-1].headers[b"".join(name).strip().lower()] = b"".join(value).strip()
        name.clear()
        value.clear()

    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise _malformed(
            f"its boundary has {len(boundary)} characters, more than the "
            f"{MAX_BOUNDARY_LENGTH} RFC 2046 allows."
        )
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": lambda: parts.append(_Part()),
            "on_header_field": lambda data, start, end: name.append(data[start:end]),
            "on_header_value": lambda data, start, end: value.append(data[start:end]),
            "on_header_end": on_header_end,
            "on_part_data": lambda data, start, end: parts[-1].chunks.append(data[start:end]),
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:  # every parse failure of python-multipart is a client's
        raise _malformed(str(exc)) from exc
    if parser.state != MultipartState.END:
        raise _malformed("it ends before the closing boundary (a truncated upload?)")
    return parts


def _malformed(reason: str) -> ServiceError:
    return ServiceError(
        400, "invalid_multipart", f"The multipart/form-data body is malformed: {reason}"
    )


async def read_files(request: Request, field_name: str) -> list[FormFile]:
    """Every part sent as form field ``field_name``, in order; 422 when there is none.

    A part counts whether or not the client gave it a filename: what it holds is
    judged by the image decoder, which names the accepted types when it is not one.
    """
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise _missing(field_name, f" (send the image as multipart/form-data field '{field_name}')")
    parts = await _parts(request, boundary)
    files = [file for file in map(_Part.as_file, parts) if file.field == field_name]
    if not files:
        raise _missing(field_name)
    return files


def openapi_form(field_name: str, description: str, *, many: bool = False) -> dict[str, Any]:
    """``openapi_extra`` describing a form with one (or repeated) file field."""
    binary = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": binary} if many else binary
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [field_name],
                        "properties": {field_name: {**schema, "description": description}},
                    }
                }
            },
        }
    }
