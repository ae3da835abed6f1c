"""From uploaded bytes to a ranked answer, with the trainer's own preprocessing.

Everything here is blocking CPU work (decode, resize, model); the routes run it in a
worker thread. Decoding goes through :func:`trainer.preprocessing.decode_image` and
:func:`~trainer.preprocessing.to_array`, the same functions that built the training
set, so the model sees exactly what it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.registry import LoadedModel
from service.runtime import OOD_OUTPUT
from trainer.preprocessing import ImageDecodeError, colourfulness, decode_image, to_array


@dataclass(frozen=True)
class PredictionWarning:
    code: str
    message: str


@dataclass(frozen=True)
class Ranked:
    """One image's answer: classes ranked from most to least likely."""

    labels: tuple[str, ...]
    probabilities: tuple[float, ...]
    warnings: tuple[PredictionWarning, ...]
    ood_score: float | None = None  # > 1: unlike the training images; None: no such check

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def confidence(self) -> float:
        return self.probabilities[0]


@dataclass(frozen=True)
class Prepared:
    """A decoded upload: model input plus what the warnings need."""

    pixels: np.ndarray
    colourfulness: float


def prepare(data: bytes, model: LoadedModel, max_pixels: int) -> Prepared:
    """Decode and resize one upload; raises :class:`ImageDecodeError`."""
    image = decode_image(data, max_pixels=max_pixels)
    return Prepared(pixels=to_array(image, model.spec), colourfulness=colourfulness(image))


def rank(
    probabilities: np.ndarray,
    classes: tuple[str, ...],
    *,
    colour: float,
    confidence_threshold: float,
    colour_threshold: float,
    ood_score: float | None = None,
) -> Ranked:
    """Sort classes by probability (renormalised in float64 so they sum to 1)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    probs = np.clip(probs, 0.0, None)
    total = probs.sum()
    probs = probs / total if total > 0 else np.full_like(probs, 1.0 / len(probs))
    order = np.argsort(-probs, kind="stable")
    warnings: list[PredictionWarning] = []
    top = float(probs[order[0]])
    if top < confidence_threshold:
        warnings.append(
            PredictionWarning(
                "low_confidence",
                f"Top probability {top:.2f} is below the {confidence_threshold:.2f} threshold; "
                "treat this label as uncertain.",
            )
        )
    if ood_score is not None and not ood_score <= 1.0:  # NaN counts as unfamiliar
        warnings.append(
            PredictionWarning(
                "unfamiliar_image",
                f"This image is unlike the radiographs the model was trained on (distance "
                f"{ood_score:.1f}x the warning threshold); the answer is likely meaningless.",
            )
        )
    if colour > colour_threshold:
        warnings.append(
            PredictionWarning(
                "not_radiograph",
                f"The image is strongly coloured (colourfulness {colour:.0f}); radiographs "
                "are gray, so this is probably not an X-ray and the answer is meaningless.",
            )
        )
    return Ranked(
        labels=tuple(classes[i] for i in order),
        probabilities=tuple(float(probs[i]) for i in order),
        warnings=tuple(warnings),
        ood_score=None if ood_score is None else round(float(ood_score), 4),
    )


def classify(
    uploads: list[bytes],
    model: LoadedModel,
    *,
    max_pixels: int,
    confidence_threshold: float,
    colour_threshold: float,
) -> list[Ranked | ImageDecodeError]:
    """One answer per upload, in order; an undecodable upload yields its error instead."""
    prepared: list[Prepared | ImageDecodeError] = []
    for data in uploads:
        try:
            prepared.append(prepare(data, model, max_pixels))
        except ImageDecodeError as exc:
            prepared.append(exc)
    good = [p for p in prepared if isinstance(p, Prepared)]
    outputs = model.predictor.run(np.stack([p.pixels for p in good])) if good else {}
    probabilities = iter(outputs.get("probabilities", []))
    scores = iter(outputs[OOD_OUTPUT]) if OOD_OUTPUT in outputs else None
    results: list[Ranked | ImageDecodeError] = []
    for item in prepared:
        if isinstance(item, ImageDecodeError):
            results.append(item)
            continue
        results.append(
            rank(
                next(probabilities),
                model.classes,
                colour=item.colourfulness,
                confidence_threshold=confidence_threshold,
                colour_threshold=colour_threshold,
                ood_score=None if scores is None else float(next(scores)),
            )
        )
    return results


def predict_pixels(pixels: np.ndarray, model: LoadedModel) -> np.ndarray:
    """Raw probabilities for already-preprocessed pixels (TF Serving's float input)."""
    return model.predictor.predict(np.asarray(pixels, dtype=np.float32))
