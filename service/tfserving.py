"""TF Serving's REST API (predict and model status), so its clients work unchanged.

``POST /v1/models/{name}:predict`` accepts TF Serving's row (``instances``) and columnar
(``inputs``) formats. An image travels as ``{"b64": "..."}`` (optionally named
``image_bytes``, the ``serve_bytes`` signature's input) and is decoded with the shared
preprocessing; raw pixels ``[H][W][C]`` (``serving_default``'s ``images``) are fed as
they are. Answers are probabilities in class order, as TF Serving returns them.
As in TF Serving, one bad instance fails the whole request.
"""

from __future__ import annotations

import base64
import binascii
from functools import partial
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from modelio.contract import PROBABILITIES
from modelio.images import ImageDecodeError, InputSpec
from service.deps import ApiKeyChecked, MetricsDep, RegistryDep, SettingsDep, current_model
from service.errors import ServiceError, decode_error
from service.inference import decode_array
from service.registry import LoadedModel, ModelRegistry
from service.schemas import (
    ErrorResponse,
    TFServingModelStatus,
    TFServingPredictRequest,
    TFServingPredictResponse,
    TFServingStatus,
    TFServingVersionStatus,
)
from service.settings import Settings
from service.threads import run_blocking

router = APIRouter(prefix="/v1/models", tags=["tf-serving"])

SIGNATURES = (None, "serving_default", "serve_bytes")
BYTES_INPUT = "image_bytes"
PIXELS_INPUT = "images"

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse},
    401: {"model": ErrorResponse},
    404: {"model": ErrorResponse, "description": "No such model or version"},
    413: {"model": ErrorResponse, "description": "More instances than BONEFRAC_MAX_INSTANCES"},
    503: {"model": ErrorResponse},
}


def _model_for(registry: ModelRegistry, name: str, version: int | None = None) -> LoadedModel:
    """The served model if it matches ``name`` (and ``version``); 404 otherwise."""
    if name != registry.name:
        raise ServiceError(
            404,
            "not_found",
            f"Model '{name}' is not served here; this server serves '{registry.name}'.",
        )
    model = current_model(registry)
    if version is not None and version != model.version:
        raise ServiceError(
            404,
            "not_found",
            f"Version {version} of '{name}' is not being served; version {model.version} is.",
        )
    return model


def _decode_instance(item: Any, spec: InputSpec, limits: Settings) -> np.ndarray:
    """One TF Serving instance to model input (HxWxC float32), via the shared code."""
    if isinstance(item, dict) and len(item) == 1:
        key, value = next(iter(item.items()))
        if key == "b64" and isinstance(value, str):
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ServiceError(400, "bad_request", f"Invalid base64: {exc}") from exc
            return decode_array(
                data, spec, max_pixels=limits.max_pixels, max_decode_bytes=limits.max_decode_bytes
            )
        if key in (BYTES_INPUT, PIXELS_INPUT):
            return _decode_instance(value, spec, limits)
    if isinstance(item, list):
        try:
            pixels = np.asarray(item, dtype=np.float32)
        except (ValueError, TypeError) as exc:
            raise ServiceError(400, "bad_request", f"Pixel arrays must be numeric: {exc}") from exc
        expected = (spec.height, spec.width, spec.channels)
        if pixels.shape != expected:
            raise ServiceError(
                400,
                "bad_request",
                f"A pixel instance must have shape {list(expected)}, got {list(pixels.shape)}.",
            )
        if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
            raise ServiceError(400, "bad_request", "Pixel values must be finite and in 0..255.")
        return pixels
    raise ServiceError(
        400,
        "bad_request",
        'Each instance must be {"b64": "<base64 image>"}, {"image_bytes": {"b64": ...}} '
        f"or a {spec.height}x{spec.width}x{spec.channels} list of pixels 0..255.",
    )


def _instances(body: TFServingPredictRequest) -> tuple[list[Any], str]:
    """The list of instances and the answer's key ('predictions' or 'outputs')."""
    if body.signature_name not in SIGNATURES:
        raise ServiceError(
            400,
            "bad_request",
            f"Serving signature name: '{body.signature_name}' not found; "
            "use serving_default or serve_bytes.",
        )
    if (body.instances is None) == (body.inputs is None):
        raise ServiceError(400, "bad_request", "Send exactly one of 'instances' and 'inputs'.")
    if body.instances is not None:
        return body.instances, "predictions"
    inputs = body.inputs
    if (
        isinstance(inputs, dict)
        and len(inputs) == 1
        and next(iter(inputs))
        in (
            BYTES_INPUT,
            PIXELS_INPUT,
        )
    ):
        inputs = next(iter(inputs.values()))
    if not isinstance(inputs, list):
        inputs = [inputs]
    return inputs, "outputs"


def _outputs(items: list[Any], model: LoadedModel, limits: Settings) -> dict[str, np.ndarray]:
    """Every output of the model for the instances, by name."""
    if not items:
        raise ServiceError(400, "bad_request", "No instances to predict.")
    try:
        batch = np.stack([_decode_instance(item, model.spec, limits) for item in items])
    except ImageDecodeError as exc:
        raise decode_error(exc) from exc
    return model.predictor.run(batch)


def _filtered(outputs: dict[str, np.ndarray], wanted: list[str]) -> dict[str, np.ndarray]:
    """The outputs ``output_filter`` names; an unknown name is a 400 naming the known ones."""
    unknown = [name for name in wanted if name not in outputs]
    if unknown or not wanted:
        raise ServiceError(
            400,
            "bad_request",
            f"output_filter names {', '.join(map(repr, unknown)) or 'nothing'}; this model's "
            f"outputs are {', '.join(sorted(outputs))}.",
        )
    return {name: outputs[name] for name in wanted}


@router.get(
    "/{name}",
    response_model=TFServingModelStatus,
    responses=_ERRORS,
    dependencies=[ApiKeyChecked],
    summary="TF Serving model status",
)
async def model_status(name: str, registry: RegistryDep) -> TFServingModelStatus:
    model = _model_for(registry, name)
    return TFServingModelStatus(
        model_version_status=[
            TFServingVersionStatus(
                version=str(model.version),
                state="AVAILABLE",
                status=TFServingStatus(error_code="OK", error_message=""),
            )
        ]
    )


async def _predict(
    *,
    request: Request,
    body: TFServingPredictRequest,
    model: LoadedModel,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> TFServingPredictResponse:
    items, key = _instances(body)
    if len(items) > settings.max_instances:
        # Counted before any base64 or image is decoded: 8,000 tiny PNGs in 840 KB of
        # JSON once took 37 s and 500 MB, and every /predict queued behind them.
        raise ServiceError(
            413,
            "too_many_instances",
            f"{len(items)} instances sent; at most {settings.max_instances} per request "
            "(BONEFRAC_MAX_INSTANCES).",
        )
    outputs = await run_blocking(request, partial(_outputs, items, model, settings))
    probs = outputs[PROBABILITIES]
    for row in probs:
        metrics.predictions.labels(model.classes[int(np.argmax(row))]).inc()
    if body.output_filter is not None:
        chosen = _filtered(outputs, body.output_filter)
        if key == "outputs":
            return TFServingPredictResponse(outputs={k: v.tolist() for k, v in chosen.items()})
        per_instance = [{k: v[i].tolist() for k, v in chosen.items()} for i in range(len(probs))]
        return TFServingPredictResponse(predictions=per_instance)
    rows = [[float(p) for p in row] for row in probs]
    return TFServingPredictResponse(**{key: rows})


@router.post(
    "/{name}:predict",
    response_model=TFServingPredictResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
    dependencies=[ApiKeyChecked],
    summary="TF Serving predict",
)
async def tfserving_predict(
    *,
    request: Request,
    name: str,
    body: TFServingPredictRequest,
    registry: RegistryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> TFServingPredictResponse:
    """Body ``{"instances": [{"b64": "..."}]}``; answer ``{"predictions": [[p, ...]]}``
    with probabilities in the order of ``GET /classes``."""
    return await _predict(
        request=request,
        body=body,
        model=_model_for(registry, name),
        settings=settings,
        metrics=metrics,
    )


@router.post(
    "/{name}/versions/{version}:predict",
    response_model=TFServingPredictResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
    dependencies=[ApiKeyChecked],
    summary="TF Serving predict, one version",
)
async def tfserving_predict_version(
    *,
    request: Request,
    name: str,
    version: int,
    body: TFServingPredictRequest,
    registry: RegistryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> TFServingPredictResponse:
    model = _model_for(registry, name, version)
    return await _predict(
        request=request, body=body, model=model, settings=settings, metrics=metrics
    )
