"""A small typed HTTP client for the bonefrac inference service.

The web page talks to the model only through this client, over HTTP, so the page needs
neither TensorFlow nor the model files. Every way a call can fail (service down, slow,
answering an error, answering something that is not the expected JSON) becomes one
:class:`ServiceError` whose ``message`` can be shown to a user as is: the page never has
to know about ``requests`` exceptions and never shows a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

DEFAULT_API_URL = "http://localhost:8000"

#: Seconds to open a connection: a service that is up accepts at once, so waiting longer
#: only delays the "service down" message.
DEFAULT_CONNECT_TIMEOUT = 3.0
#: Seconds to wait for a prediction: the first call may load the model.
DEFAULT_READ_TIMEOUT = 30.0
#: Seconds to wait for the cheap status endpoints that the sidebar polls on every rerun.
STATUS_READ_TIMEOUT = 5.0


class ServiceError(Exception):
    """A call to the service that did not give a usable answer.

    ``message`` is written for the person looking at the page; ``code`` is the service's
    error code (or one of ``unreachable``, ``timeout``, ``bad_response``, ``http_error``)
    and ``status`` the HTTP status, when there was one, for logs and tests.
    """

    def __init__(self, message: str, *, code: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


@dataclass(frozen=True)
class ClassProbability:
    """One class and the probability the model gave it."""

    label: str
    probability: float


@dataclass(frozen=True)
class PredictionWarning:
    """A reason to distrust an answer (``low_confidence``, ``not_radiograph``, ...)."""

    code: str
    message: str


@dataclass(frozen=True)
class DicomInfo:
    """Non-identifying facts the service read from a DICOM upload (never patient data)."""

    modality: str | None = None
    body_part_examined: str | None = None
    view_position: str | None = None
    photometric_interpretation: str | None = None
    rows: int | None = None
    columns: int | None = None
    bits_stored: int | None = None
    frames: int | None = None
    transfer_syntax: str | None = None
    windowing: str | None = None


@dataclass(frozen=True)
class Explanation:
    """Where the model looked for ``label`` (``POST /predict?explain=true``)."""

    method: str
    label: str
    heatmap_png: str  # base64 8-bit gray PNG, the image's orientation and aspect ratio


@dataclass(frozen=True)
class FractureRegion:
    """Where a fracture may lie: a box in the uploaded image's pixels, and its score."""

    box: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max
    score: float


@dataclass(frozen=True)
class Fracture:
    """Is a bone broken: the service's ``fracture`` block."""

    probability: float | None
    finding: str  # "fracture", "no_fracture" or "uncertain"
    regions: tuple[FractureRegion, ...] = ()
    rule_out: float | None = None  # thresholds on the probability
    rule_in: float | None = None
    sensitivity: float | None = None  # kept at rule_out in cross-validation
    specificity: float | None = None  # kept at rule_in
    image_size: tuple[int, int] | None = None  # (width, height) the boxes refer to


@dataclass(frozen=True)
class Prediction:
    """The service's answer for one image (see ``POST /predict``)."""

    model: str
    version: int
    label: str
    confidence: float
    probabilities: tuple[ClassProbability, ...]
    warnings: tuple[PredictionWarning, ...] = field(default_factory=tuple)
    trained_on: str | None = None  # what the answering model learned from, when it says
    dicom: DicomInfo | None = None  # set for a DICOM upload
    explanation: Explanation | None = None  # when asked for and the model can explain
    fracture: Fracture | None = None  # a model with fracture heads
    summary: str | None = None  # the finding first, then the type as a conditional
    prediction_id: str | None = None  # the answer's id in the prediction log (reviews)


@dataclass(frozen=True)
class ModelClasses:
    """The classes the serving model can answer (see ``GET /classes``)."""

    model: str
    version: int
    classes: tuple[str, ...]
    trained_on: str | None = None


@dataclass(frozen=True)
class ServiceStatus:
    """Whether the service answers (``alive``) and has a model loaded (``ready``)."""

    alive: bool
    ready: bool
    detail: str
    model: str | None = None
    version: int | None = None


class ServiceClient:
    """Calls the service over one keep-alive :class:`requests.Session`.

    One instance is meant to live as long as the page process (the page caches it with
    ``st.cache_resource``), so reruns reuse the open connection instead of paying a new
    TCP handshake for every widget interaction.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        api_key: str | None = None,
        api_key_header: str = "X-API-Key",
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session = session or requests.Session()
        self._session.headers.setdefault("Accept", "application/json")
        if api_key:
            # The service can require a key on prediction routes (BONEFRAC_API_KEY).
            self._session.headers[api_key_header] = api_key

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    # -- endpoints ---------------------------------------------------------------------

    def predict(
        self,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        *,
        explain: bool = False,
    ) -> Prediction:
        """Classify one image file, as uploaded (the service decodes and checks it); with
        ``explain``, also ask where the model looked."""
        media_type = content_type or "application/octet-stream"
        path = "/predict?explain=true" if explain else "/predict"
        body = self._request("POST", path, files={"file": (filename, data, media_type)})
        return _parse_prediction(body)

    def classes(self) -> ModelClasses:
        """The serving model's name, version and class names."""
        body = self._request("GET", "/classes", read_timeout=STATUS_READ_TIMEOUT)
        try:
            classes = tuple(str(name) for name in body["classes"])
            return ModelClasses(
                model=str(body["model"]),
                version=int(body["version"]),
                classes=classes,
                trained_on=_optional_text(body.get("trained_on")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad_response("/classes", exc) from exc

    def status(self) -> ServiceStatus:
        """Liveness and readiness, never raising: the sidebar shows whatever it gets."""
        try:
            self._request("GET", "/healthz", read_timeout=STATUS_READ_TIMEOUT)
        except ServiceError as exc:
            return ServiceStatus(alive=False, ready=False, detail=exc.message)
        try:
            body = self._request("GET", "/readyz", read_timeout=STATUS_READ_TIMEOUT)
        except ServiceError as exc:
            return ServiceStatus(alive=True, ready=False, detail=exc.message)
        model, version = body.get("model"), body.get("version")
        return ServiceStatus(
            alive=True,
            ready=True,
            detail="Ready",
            model=str(model) if model is not None else None,
            version=version if isinstance(version, int) else None,
        )

    def send_review(self, review: ReviewDraft, *, reviewer_key: str | None = None) -> Review:
        """Store a reader's verdict on an answer (``POST /feedback``); sending the same
        review again is harmless (the service keeps one)."""
        body = self._request(
            "POST",
            "/feedback",
            json=asdict(review),
            headers=_reviewer_headers(reviewer_key),
            read_timeout=STATUS_READ_TIMEOUT,
        )
        return _parse_review(body)

    def recent_answers(
        self, limit: int = 50, *, reviewer_key: str | None = None
    ) -> tuple[LoggedAnswer, ...]:
        """The latest recorded answers with their reviews, contradicted ones first."""
        body = self._request(
            "GET",
            "/predictions",
            params={"limit": limit},
            headers=_reviewer_headers(reviewer_key),
            read_timeout=STATUS_READ_TIMEOUT,
        )
        try:
            return tuple(_parse_logged(item) for item in body["answers"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad_response("/predictions", exc) from exc

    # -- plumbing ----------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        read_timeout: float | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One call, its JSON object body, or a :class:`ServiceError` saying what failed."""
        url = self.base_url + path
        timeout = (self.connect_timeout, read_timeout or self.read_timeout)
        try:
            response = self._session.request(
                method,
                url,
                files=files,
                json=json,
                params=params,
                headers=dict(headers) if headers else None,
                timeout=timeout,
            )
        except requests.exceptions.Timeout as exc:
            # ConnectTimeout is both a Timeout and a ConnectionError: the service is not
            # reachable, which is what the user needs to hear.
            if isinstance(exc, requests.exceptions.ConnectTimeout):
                raise _unreachable(self.base_url) from exc
            raise ServiceError(
                f"The prediction service at {self.base_url} did not answer within "
                f"{timeout[1]:g} seconds. It may be overloaded; try again in a moment.",
                code="timeout",
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise _unreachable(self.base_url) from exc
        except requests.exceptions.RequestException as exc:
            raise ServiceError(
                f"Could not call the prediction service at {self.base_url}: {exc}",
                code="request_failed",
            ) from exc

        try:
            body = response.json()
        except ValueError:
            body = None

        if not response.ok:
            raise _error_from_body(response.status_code, body, path)
        if not isinstance(body, dict):
            raise ServiceError(
                f"The prediction service answered {path} with something that is not a "
                "JSON object. Is BONEFRAC_API_URL pointing at the bonefrac service?",
                code="bad_response",
                status=response.status_code,
            )
        return body


def _unreachable(base_url: str) -> ServiceError:
    return ServiceError(
        f"Cannot reach the prediction service at {base_url}. Check that it is running "
        "and that BONEFRAC_API_URL points at it.",
        code="unreachable",
    )


def _bad_response(path: str, exc: Exception) -> ServiceError:
    return ServiceError(
        f"The prediction service answered {path} in an unexpected shape ({exc!r}). "
        "The page and the service may be different versions.",
        code="bad_response",
    )


def _error_from_body(status: int, body: object, path: str) -> ServiceError:
    """The service's own error message when it sent one, else a generic one by status."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        message = str(error.get("message") or "").strip()
        code = str(error.get("code") or "http_error")
        if message:
            return ServiceError(message, code=code, status=status)
    if status == 503:
        message = "The prediction service is starting or has no model loaded yet."
    elif status == 413:
        message = "The file is too large for the prediction service."
    elif status == 415:
        message = "The prediction service does not accept this file type."
    elif 400 <= status < 500:
        message = f"The prediction service refused the request to {path} (HTTP {status})."
    else:
        message = f"The prediction service failed on {path} (HTTP {status}). Try again later."
    return ServiceError(message, code="http_error", status=status)


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _parse_warning(item: object) -> PredictionWarning:
    """``{"code", "message"}`` as the service sends it; a bare string is taken as the message."""
    if isinstance(item, Mapping):
        return PredictionWarning(
            code=str(item.get("code") or "warning"), message=str(item["message"])
        )
    return PredictionWarning(code="warning", message=str(item))


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parse_dicom(value: object) -> DicomInfo | None:
    """``dicom`` as the service sends it; anything else (null, an older service) is None."""
    if not isinstance(value, Mapping):
        return None
    return DicomInfo(
        modality=_optional_text(value.get("modality")),
        body_part_examined=_optional_text(value.get("body_part_examined")),
        view_position=_optional_text(value.get("view_position")),
        photometric_interpretation=_optional_text(value.get("photometric_interpretation")),
        rows=_optional_int(value.get("rows")),
        columns=_optional_int(value.get("columns")),
        bits_stored=_optional_int(value.get("bits_stored")),
        frames=_optional_int(value.get("frames")),
        transfer_syntax=_optional_text(value.get("transfer_syntax")),
        windowing=_optional_text(value.get("windowing")),
    )


def _parse_explanation(value: object) -> Explanation | None:
    """``explanation`` as the service sends it; anything else (null, an older service) is None."""
    if not isinstance(value, Mapping):
        return None
    method, label, heatmap = (value.get(k) for k in ("method", "label", "heatmap_png"))
    if not (isinstance(method, str) and isinstance(label, str) and isinstance(heatmap, str)):
        return None
    return Explanation(method=method, label=label, heatmap_png=heatmap)


def _parse_fracture(value: object) -> Fracture | None:
    """``fracture`` as the service sends it; anything else (null, an older service) is None."""
    if not isinstance(value, Mapping) or not isinstance(value.get("finding"), str):
        return None
    regions = []
    for item in value.get("regions") or ():
        box = item.get("box") if isinstance(item, Mapping) else None
        if isinstance(box, list) and len(box) == 4:
            regions.append(
                FractureRegion(box=tuple(float(v) for v in box), score=float(item["score"]))  # type: ignore[arg-type]
            )
    thresholds = value.get("thresholds")
    if not isinstance(thresholds, Mapping):
        thresholds = {}
    rule_out = thresholds.get("rule_out") or {}
    rule_in = thresholds.get("rule_in") or {}
    probability = value.get("probability")
    size = value.get("image_size")
    image_size = (int(size[0]), int(size[1])) if isinstance(size, list) and len(size) == 2 else None
    return Fracture(
        probability=float(probability) if isinstance(probability, int | float) else None,
        finding=str(value["finding"]),
        regions=tuple(regions),
        rule_out=rule_out.get("threshold"),
        rule_in=rule_in.get("threshold"),
        sensitivity=rule_out.get("sensitivity"),
        specificity=rule_in.get("specificity"),
        image_size=image_size,
    )


def _parse_prediction(body: Mapping[str, Any]) -> Prediction:
    """A :class:`Prediction` from ``POST /predict``'s body, probabilities sorted high first."""
    try:
        probabilities = tuple(
            sorted(
                (
                    ClassProbability(
                        label=str(item["label"]), probability=float(item["probability"])
                    )
                    for item in body["probabilities"]
                ),
                key=lambda item: item.probability,
                reverse=True,
            )
        )
        warnings = tuple(_parse_warning(item) for item in body.get("warnings") or ())
        return Prediction(
            model=str(body["model"]),
            version=int(body["version"]),
            label=str(body["label"]),
            confidence=float(body["confidence"]),
            probabilities=probabilities,
            warnings=warnings,
            trained_on=_optional_text(body.get("trained_on")),
            dicom=_parse_dicom(body.get("dicom")),
            explanation=_parse_explanation(body.get("explanation")),
            fracture=_parse_fracture(body.get("fracture")),
            summary=_optional_text(body.get("summary")),
            prediction_id=_optional_text(body.get("prediction_id")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad_response("/predict", exc) from exc


# -- reviews (POST /feedback, GET /predictions) -----------------------------------------

REVIEWER_KEY_HEADER = "X-Reviewer-Key"


@dataclass(frozen=True)
class ReviewDraft:
    """What a reader sends: the finding and the type (None: not said) and a note."""

    prediction_id: str
    reader: str
    finding: str | None = None  # "fracture" or "no_fracture"
    fracture_type: str | None = None
    comment: str | None = None


@dataclass(frozen=True)
class Review:
    """A stored review and whether the reader agreed with the model."""

    id: int
    prediction_id: str
    created_at: str
    reader: str
    finding: str | None
    fracture_type: str | None
    comment: str | None
    model_label: str
    model_finding: str | None
    disagrees: bool


@dataclass(frozen=True)
class LoggedAnswer:
    """A recorded answer and its reviews (``GET /predictions``)."""

    prediction_id: str
    created_at: str
    model: str
    version: int
    label: str
    confidence: float
    finding: str | None
    warnings: tuple[str, ...]
    image_kind: str
    image_stored: bool
    disagreement: bool
    reviews: tuple[Review, ...]


def _reviewer_headers(key: str | None) -> dict[str, str] | None:
    return {REVIEWER_KEY_HEADER: key} if key else None


def _parse_review(body: Mapping[str, Any]) -> Review:
    try:
        return Review(
            id=int(body["id"]),
            prediction_id=str(body["prediction_id"]),
            created_at=str(body["created_at"]),
            reader=str(body["reader"]),
            finding=_optional_text(body.get("finding")),
            fracture_type=_optional_text(body.get("fracture_type")),
            comment=_optional_text(body.get("comment")),
            model_label=str(body["model_label"]),
            model_finding=_optional_text(body.get("model_finding")),
            disagrees=bool(body["disagrees"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad_response("/feedback", exc) from exc


def _parse_logged(item: Mapping[str, Any]) -> LoggedAnswer:
    return LoggedAnswer(
        prediction_id=str(item["prediction_id"]),
        created_at=str(item["created_at"]),
        model=str(item["model"]),
        version=int(item["version"]),
        label=str(item["label"]),
        confidence=float(item["confidence"]),
        finding=_optional_text(item.get("finding")),
        warnings=tuple(str(code) for code in item.get("warnings") or ()),
        image_kind=str(item.get("image_kind") or ""),
        image_stored=bool(item.get("image_stored")),
        disagreement=bool(item.get("disagreement")),
        reviews=tuple(_parse_review(review) for review in item.get("reviews") or ()),
    )
