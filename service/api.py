"""The service's own routes: predict, batch predict, classes, models, health, metrics."""

from __future__ import annotations

import time
from dataclasses import asdict
from functools import partial
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from modelio.images import ACCEPTED_MEDIA_TYPES, ImageDecodeError
from service.deps import (
    ApiKeyChecked,
    MetricsDep,
    RegistryDep,
    ServedModelDep,
    SettingsDep,
)
from service.errors import ServiceError, decode_error
from service.fracture import FractureAnswer, summary
from service.inference import Ranked, classify
from service.metrics import Metrics
from service.registry import LoadedModel, public_metadata
from service.schemas import (
    BatchItem,
    BatchResponse,
    ClassesResponse,
    ClassProbability,
    DicomInfo,
    ErrorDetail,
    ErrorResponse,
    Explanation,
    FractureBlock,
    FractureRegion,
    FractureThresholds,
    Health,
    ModelsResponse,
    OperatingPoint,
    Prediction,
    PredictionWarning,
    Readiness,
    ServedModel,
    VersionInfo,
)
from service.threads import run_blocking
from service.uploads import openapi_form, read_files

router = APIRouter()

_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Empty file"},
    413: {"model": ErrorResponse, "description": "Upload or image over the size limits"},
    415: {
        "model": ErrorResponse,
        "description": "Not an accepted image type, or a DICOM transfer syntax no codec reads",
    },
    422: {
        "model": ErrorResponse,
        "description": "Corrupt or truncated image, a DICOM object without an image, or a "
        "missing form field",
    },
    401: {"model": ErrorResponse, "description": "API key missing or wrong (when one is set)"},
    503: {"model": ErrorResponse, "description": "No model loaded; says how to train one"},
}

IMAGE_TYPES = ", ".join(ACCEPTED_MEDIA_TYPES)

ExplainQuery = Annotated[
    bool,
    Query(
        description="Also return a heatmap of where the model looked (models on a pretrained "
        "backbone; others answer with a 'no_explanation' warning)"
    ),
]


def json_response(body: BaseModel) -> Response:
    """Send an already-validated model as JSON, serialised once by pydantic's core.

    Returning the model itself would make FastAPI validate it a second time against
    ``response_model`` before dumping it: measurable on the hot ``/predict`` path, whose
    whole HTTP overhead over the bare model is about a millisecond.
    """
    return Response(content=body.model_dump_json(), media_type="application/json")


def to_fracture_block(answer: FractureAnswer | None) -> FractureBlock | None:
    if answer is None:
        return None
    rules = answer.rules
    return FractureBlock(
        probability=answer.probability,
        finding=answer.finding,
        thresholds=FractureThresholds(
            rule_out=OperatingPoint(**asdict(rules.rule_out)),
            rule_in=OperatingPoint(**asdict(rules.rule_in)),
            region_threshold=rules.region_threshold,
            measured_on=rules.measured_on,
        ),
        regions=[FractureRegion(box=list(r.box), score=r.score) for r in answer.regions],
        image_size=list(answer.image_size),
    )


def to_prediction(ranked: Ranked, model: LoadedModel) -> Prediction:
    return Prediction(
        model=model.name,
        version=model.version,
        summary=summary(ranked.fracture, ranked.label, ranked.confidence),
        fracture=to_fracture_block(ranked.fracture),
        label=ranked.label,
        confidence=ranked.confidence,
        probabilities=[
            ClassProbability(label=label, probability=p)
            for label, p in zip(ranked.labels, ranked.probabilities, strict=True)
        ],
        warnings=[PredictionWarning(code=w.code, message=w.message) for w in ranked.warnings],
        ood_score=ranked.ood_score,
        trained_on=model.trained_on,
        dicom=None if ranked.dicom is None else DicomInfo(**ranked.dicom.to_dict()),
        explanation=None
        if ranked.explanation is None
        else Explanation(
            method=ranked.explanation.method,
            label=ranked.explanation.label,
            heatmap_png=ranked.explanation.heatmap_png,
            fracture_heatmap_png=ranked.explanation.fracture_heatmap_png,
        ),
    )


async def _classify(
    request: Request, uploads: list[bytes], model: LoadedModel, *, explain: bool = False
) -> list[Ranked | ImageDecodeError]:
    settings = request.app.state.settings
    metrics: Metrics = request.app.state.metrics
    work = partial(
        classify,
        uploads,
        model,
        max_pixels=settings.max_pixels,
        max_decode_bytes=settings.max_decode_bytes,
        confidence_threshold=settings.confidence_threshold,
        colour_threshold=settings.colour_threshold,
        explain=explain,
    )
    results = await run_blocking(request, work)
    for result in results:
        if isinstance(result, Ranked):
            metrics.predictions.labels(result.label).inc()
    return results


@router.post(
    "/predict",
    response_model=Prediction,
    responses=_UPLOAD_ERRORS,
    dependencies=[ApiKeyChecked],
    tags=["predict"],
    summary="Classify one radiograph",
    openapi_extra=openapi_form(
        "file", f"The radiograph: {IMAGE_TYPES} (DICOM: first frame); any bit depth"
    ),
)
async def predict(
    request: Request, model: ServedModelDep, explain: ExplainQuery = False
) -> Response:
    """Upload one image as form field ``file``; get every class ranked, with warnings."""
    started = time.perf_counter()
    [upload, *_] = await read_files(request, "file")
    [result] = await _classify(request, [upload.data], model, explain=explain)
    if isinstance(result, ImageDecodeError):
        raise decode_error(result)
    prediction = to_prediction(result, model)
    request.app.state.records.answered(
        "/predict",
        model=model,
        prediction=prediction,
        data=upload.data,
        filename=upload.filename,
        started=started,
    )
    return json_response(prediction)


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    responses=_UPLOAD_ERRORS,
    dependencies=[ApiKeyChecked],
    tags=["predict"],
    summary="Classify several radiographs",
    openapi_extra=openapi_form(
        "files", f"Radiographs ({IMAGE_TYPES}), one answer each, in order", many=True
    ),
)
async def predict_batch(
    request: Request, model: ServedModelDep, settings: SettingsDep, explain: ExplainQuery = False
) -> BatchResponse:
    """Upload images as repeated form field ``files``. A bad file gets its own error
    entry (with the status it would have got alone); the others still get answers."""
    started = time.perf_counter()
    files = await read_files(request, "files")
    if len(files) > settings.max_batch_files:
        raise ServiceError(
            413,
            "too_many_files",
            f"{len(files)} files sent; at most {settings.max_batch_files} per batch "
            "(BONEFRAC_MAX_BATCH_FILES).",
        )
    results = await _classify(request, [upload.data for upload in files], model, explain=explain)
    items = []
    for index, (upload, result) in enumerate(zip(files, results, strict=True)):
        if isinstance(result, ImageDecodeError):
            error = decode_error(result)
            items.append(
                BatchItem(
                    index=index,
                    filename=upload.filename,
                    status=error.status_code,
                    error=ErrorDetail(code=error.code, message=str(error.detail)),
                )
            )
        else:
            items.append(
                BatchItem(
                    index=index,
                    filename=upload.filename,
                    status=200,
                    prediction=to_prediction(result, model),
                )
            )
    for upload, item in zip(files, items, strict=True):
        if item.prediction is not None:
            request.app.state.records.answered(
                "/predict/batch",
                model=model,
                prediction=item.prediction,
                data=upload.data,
                filename=upload.filename,
                started=started,
            )
    return BatchResponse(model=model.name, version=model.version, results=items)


@router.get(
    "/classes",
    response_model=ClassesResponse,
    responses={503: {"model": ErrorResponse}, 401: {"model": ErrorResponse}},
    dependencies=[ApiKeyChecked],
    tags=["model"],
    summary="Class names in output order",
)
async def classes(model: ServedModelDep) -> ClassesResponse:
    return ClassesResponse(
        model=model.name,
        version=model.version,
        classes=list(model.classes),
        trained_on=model.trained_on,
    )


@router.get(
    "/models",
    response_model=ModelsResponse,
    responses={401: {"model": ErrorResponse}},
    dependencies=[ApiKeyChecked],
    tags=["model"],
    summary="Versions on disk",
)
async def models(registry: RegistryDep) -> ModelsResponse:
    """Every integer version on disk, which one is served, why any was refused."""
    current = registry.current
    versions = []
    for version in await to_thread.run_sync(registry.versions_on_disk):
        refusal = registry.refused.get(version)
        if current is not None and version == current.version:
            versions.append(VersionInfo(version=version, state="serving"))
        elif refusal is not None:
            versions.append(VersionInfo(version=version, state="refused", reason=refusal.reason))
        else:
            versions.append(VersionInfo(version=version, state="available"))
    served = None
    if current is not None:
        served = ServedModel(
            version=current.version,
            trained_on=current.trained_on,
            path=registry.public_path(current.path),
            runtime=current.predictor.runtime,
            loaded_at=current.loaded_at,
            load_seconds=current.load_seconds,
            metadata=public_metadata(current.metadata),
        )
    return ModelsResponse(
        name=registry.name,
        models_dir=registry.public_dir,
        pinned_version=registry.pinned,
        served=served,
        versions=versions,
    )


@router.get("/healthz", response_model=Health, tags=["health"], summary="Process alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": ErrorResponse, "description": "No model loaded yet"}},
    tags=["health"],
    summary="Model loaded and warmed up",
)
async def readyz(model: ServedModelDep) -> Readiness:
    return Readiness(status="ready", model=model.name, version=model.version)


@router.get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        401: {"model": ErrorResponse},
    },
    dependencies=[ApiKeyChecked],
)
async def metrics_text(metrics: MetricsDep, registry: RegistryDep) -> Response:
    current = registry.current
    metrics.model_version.labels(registry.name).set(current.version if current else 0)
    return Response(content=metrics.render(), media_type=metrics.content_type)
