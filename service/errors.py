"""One error format for every failure: ``{"error": {"code": "...", "message": "..."}}``.

Routes raise :class:`ServiceError` (or let FastAPI raise its own); the handlers here
turn everything, including an unexpected exception, into that JSON. A traceback is
logged, never sent.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from modelio.images import ACCEPTED_MEDIA_TYPES, ImageDecodeError

log = logging.getLogger("service.errors")

#: HTTP status and error code for each way an upload can fail to decode.
DECODE_ERRORS: dict[str, tuple[int, str]] = {
    "empty": (400, "empty_file"),
    "not_image": (415, "unsupported_media_type"),
    "corrupt": (422, "invalid_image"),
    "too_large": (413, "image_too_large"),
    "unsupported_encoding": (415, "unsupported_transfer_syntax"),  # DICOM, names the syntax
    "no_pixels": (422, "no_image"),  # a DICOM object without an image (a report, ...)
}

_STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    408: "request_timeout",
    415: "unsupported_media_type",
    422: "validation_error",
    499: "client_closed_request",
    503: "model_unavailable",
}


class ServiceError(StarletteHTTPException):
    """An HTTP error with a machine-readable ``code`` alongside the message."""

    def __init__(
        self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code


def decode_error(exc: ImageDecodeError) -> ServiceError:
    """The HTTP answer for an upload that is not a usable image."""
    status, code = DECODE_ERRORS[exc.kind]
    message = str(exc)
    if exc.kind == "not_image":
        message += f" Accepted types: {', '.join(ACCEPTED_MEDIA_TYPES)}."
    return ServiceError(status, code, message)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def error_response(exc: StarletteHTTPException) -> JSONResponse:
    """The JSON response for an HTTP error (also used by pure ASGI middleware)."""
    code = getattr(exc, "code", None) or _STATUS_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc)


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {
            "location": list(err.get("loc", ())),
            "message": err.get("msg", ""),
            "type": err.get("type"),
        }
        for err in exc.errors()
    ]
    summary = "; ".join(
        f"{'.'.join(str(p) for p in d['location'])}: {d['message']}" for d in details
    )
    return JSONResponse(
        error_body("validation_error", f"The request is invalid: {summary}", details),
        status_code=422,
    )


def _client_disconnect(request: Request, exc: Exception) -> JSONResponse:
    """A client that went away is its own doing (nginx logs 499): one line, no trace."""
    log.info("%s %s: client disconnected (499)", request.method, request.url.path)
    return JSONResponse(
        error_body("client_closed_request", "The client closed the connection."), status_code=499
    )


def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        error_body("internal_error", "The server failed to handle this request; see its log."),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _unexpected_error)
