"""Response bodies, as pydantic models so ``/docs`` describes exactly what is sent."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from uuid import uuid4

from pydantic import BaseModel, Field

from modelio.contract import Finding


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable reason, e.g. 'unsupported_media_type'")
    message: str = Field(description="What went wrong and what to do, for a human")
    details: Any = Field(None, description="Extra structure (validation errors), when any")


class ErrorResponse(BaseModel):
    """Every error the service returns has this shape."""

    error: ErrorDetail


class ClassProbability(BaseModel):
    label: str
    probability: float = Field(ge=0.0, le=1.0)


class PredictionWarning(BaseModel):
    code: Literal[
        "low_confidence",
        "not_radiograph",
        "unfamiliar_image",
        "unfamiliar_body_part",
        "blank_image",
        "multi_frame",
        "no_explanation",
    ]
    message: str


class DicomInfo(BaseModel):
    """Non-identifying facts of a DICOM upload. Patient, study and device identifiers
    and dates are never read out; coded values that are not DICOM code strings are null."""

    modality: str | None = Field(description="Modality, e.g. 'CR', 'DX'")
    body_part_examined: str | None = Field(description="Body Part Examined, e.g. 'EXTREMITY'")
    view_position: str | None = Field(description="View Position, e.g. 'AP', 'LAT'")
    photometric_interpretation: str | None = Field(
        description="'MONOCHROME1' (inverted for display), 'MONOCHROME2', 'RGB', ..."
    )
    rows: int
    columns: int
    bits_stored: int
    frames: int = Field(description="Frames in the file; only the first is classified")
    transfer_syntax: str = Field(description="The encoding's registered name and UID")
    windowing: str = Field(
        description="How stored values became gray levels: the file's VOI LUT, its first "
        "window, or a 0.5-99.5 percentile window when it has none"
    )


class Explanation(BaseModel):
    """Where the model looked: asked for with ``explain=true``."""

    method: str = Field(
        description="'class-activation-map': the evidence for the label over the other "
        "classes, position by position, from the model's own class maps"
    )
    label: str = Field(description="The class explained (the answer's label)")
    fracture_heatmap_png: str | None = Field(
        None,
        description="Base64 PNG like heatmap_png, of the fracture map (where a fracture may "
        "lie, 255 = probability 1); null for a model without fracture heads",
    )
    heatmap_png: str = Field(
        description="Base64 PNG, 8-bit gray, the orientation and aspect ratio of the image as "
        "shown (after EXIF rotation or DICOM decoding), longer side at most 512 px: 0 = no "
        "evidence, 255 = the strongest in this image. Where the model looked, not proof of "
        "a fracture"
    )


class FractureRegion(BaseModel):
    """Where a fracture may lie: connected cells of the fracture map above its threshold."""

    box: list[float] = Field(
        min_length=4,
        max_length=4,
        description="[x_min, y_min, x_max, y_max] in pixels of the uploaded image as shown "
        "(after EXIF rotation or DICOM decoding), origin top left",
    )
    score: float = Field(ge=0.0, le=1.0, description="The region's strongest cell")


class OperatingPoint(BaseModel):
    """A threshold on the fracture probability and what it kept in grouped CV."""

    threshold: float = Field(ge=0.0, le=1.0)
    sensitivity: float = Field(
        ge=0.0, le=1.0, description="Share of fractured radiographs at or above the threshold"
    )
    specificity: float = Field(
        ge=0.0, le=1.0, description="Share of intact radiographs below the threshold"
    )


class FractureThresholds(BaseModel):
    rule_out: OperatingPoint = Field(
        description="Below this the finding is 'no_fracture' (chosen to miss few fractures)"
    )
    rule_in: OperatingPoint = Field(
        description="At or above this the finding is 'fracture' (chosen for few false alarms)"
    )
    region_threshold: float = Field(
        ge=0.0, le=1.0, description="Map cells at or above this form the regions"
    )
    measured_on: str = Field(
        description="Where the sensitivities and specificities were measured (held-out folds "
        "of grouped cross-validation, never a test split)"
    )


class FractureBlock(BaseModel):
    """Is a bone broken, and where: the answer's first question."""

    probability: float | None = Field(
        ge=0.0, le=1.0, description="Probability that the radiograph shows a fracture"
    )
    finding: Finding = Field(
        description="'fracture' at or above rule_in, 'no_fracture' below rule_out, "
        "'uncertain' between them"
    )
    thresholds: FractureThresholds
    regions: list[FractureRegion] = Field(
        description="Where a fracture may lie, strongest first; empty for 'no_fracture'"
    )
    image_size: list[int] = Field(
        min_length=2,
        max_length=2,
        description="[width, height] of the image as shown, the frame the boxes refer to",
    )


class Prediction(BaseModel):
    """One image's answer: every class, most likely first, probabilities summing to 1."""

    model: str = Field(description="Name of the model that answered")
    version: int = Field(description="Version of that model")
    summary: str = Field(
        "",
        description="One sentence: the fracture finding first, then the type as a "
        "conditional ('if this is a fracture, its type is most likely ...')",
    )
    fracture: FractureBlock | None = Field(
        None,
        description="Is a bone broken, and where; null for a model without fracture heads "
        "(its types are then named for any image, broken or not)",
    )
    label: str = Field(
        description="The most likely fracture type, if this is a fracture (the type head "
        "learned from fractures only: read `fracture` first)"
    )
    confidence: float = Field(ge=0.0, le=1.0, description="Probability of `label`")
    probabilities: list[ClassProbability] = Field(
        description="Every class, sorted from most to least likely; sums to 1"
    )
    warnings: list[PredictionWarning] = Field(
        description="Reasons to distrust this answer; empty when none"
    )
    ood_score: float | None = Field(
        None,
        description="How unlike the training images this one is, over the warning threshold: "
        "above 1 adds an 'unfamiliar_image' warning; null for a model without this check",
    )
    trained_on: str | None = Field(None, description="What the answering model learned from")
    dicom: DicomInfo | None = Field(
        None, description="For a DICOM upload, its non-identifying facts; null otherwise"
    )
    explanation: Explanation | None = Field(
        None,
        description="With explain=true, a heatmap of where the model looked; null otherwise "
        "(and with a 'no_explanation' warning from a model that cannot explain)",
    )
    prediction_id: str = Field(
        default_factory=lambda: str(uuid4()),
        description="This answer's id in the prediction log: send it with a reader's "
        "review to POST /feedback",
    )


class BatchItem(BaseModel):
    """One file of a batch: exactly one of ``prediction`` and ``error`` is set."""

    index: int = Field(description="Position of the file in the request, from 0")
    filename: str | None
    status: int = Field(description="The HTTP status this file alone would have got")
    prediction: Prediction | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    model: str
    version: int
    results: list[BatchItem] = Field(description="One entry per file, in request order")


class ClassesResponse(BaseModel):
    model: str
    version: int
    classes: list[str] = Field(description="Class names in the model's output order")
    trained_on: str | None = Field(None, description="What the served model learned from")


class VersionInfo(BaseModel):
    version: int
    state: Literal["serving", "available", "refused"]
    reason: str | None = Field(None, description="Why a refused version is not served")


class ServedModel(BaseModel):
    version: int
    trained_on: str | None = Field(None, description="What this version learned from")
    path: str = Field(description="The version folder, relative: <models folder name>/<name>/<N>")
    runtime: str = Field(description="'tflite' (ai-edge-litert) or 'saved_model' (TensorFlow)")
    loaded_at: dt.datetime
    load_seconds: float
    metadata: dict[str, Any] = Field(
        description="The version's metadata.json; absolute paths cut to their base name"
    )


class ModelsResponse(BaseModel):
    name: str
    models_dir: str = Field(description="The models folder's name (never its absolute path)")
    pinned_version: int | None
    served: ServedModel | None = Field(description="null until a version is loaded")
    versions: list[VersionInfo] = Field(description="Integer versions on disk, oldest first")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    model: str
    version: int


class TFServingStatus(BaseModel):
    error_code: str
    error_message: str


class TFServingVersionStatus(BaseModel):
    version: str
    state: str
    status: TFServingStatus


class TFServingModelStatus(BaseModel):
    """TF Serving's ``GET /v1/models/{name}`` answer."""

    model_version_status: list[TFServingVersionStatus]


class TFServingPredictRequest(BaseModel):
    """TF Serving's REST predict body: row (``instances``) or columnar (``inputs``) format.

    An instance is ``{"b64": "..."}`` (an encoded image, TF Serving's binary convention),
    ``{"image_bytes": {"b64": "..."}}`` (the ``serve_bytes`` signature's input by name),
    or a ``[H][W][C]`` list of raw pixels 0..255 (``serving_default``'s ``images``).
    """

    signature_name: str | None = Field(None, examples=["serve_bytes"])
    instances: list[Any] | None = None
    inputs: Any = None
    output_filter: list[str] | None = Field(
        None,
        description="Output names to return (as in TF Serving's gRPC PredictRequest), e.g. "
        "['probabilities', 'fracture_probability', 'fracture_map']; then each prediction is "
        "an object of those outputs by name. Without it, probabilities alone, as lists",
        examples=[["probabilities", "fracture_probability"]],
    )


class TFServingPredictResponse(BaseModel):
    predictions: list[list[float]] | list[dict[str, Any]] | None = Field(
        None,
        description="Row format: one probability list per instance, in class order (or, with "
        "output_filter, one object of the named outputs per instance)",
    )
    outputs: list[list[float]] | dict[str, Any] | None = Field(
        None,
        description="Columnar format answer (with output_filter: the named outputs, each "
        "batched over the instances)",
    )
