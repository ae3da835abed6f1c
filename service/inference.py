"""From uploaded bytes to a ranked answer, with the preprocessing the model was trained with.

Everything here is blocking CPU work (decode, resize, model); the routes run it in a
worker thread. Decoding goes through :func:`modelio.images.decode` (DICOM included)
and :func:`~modelio.images.to_array`, the same functions that built the training
set, so the model sees exactly what it was trained on. What a decode may cost is
:mod:`modelio.budget`'s rule, the same one the page applies to its preview.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from modelio import contract
from modelio.budget import check_decode_cost
from modelio.contract import FRACTURE_MAP, FRACTURE_PROBABILITY, is_trained_body_part
from modelio.images import (
    DecodeNote,
    DicomFacts,
    ImageDecodeError,
    InputSpec,
    colourfulness,
    decode,
    load_array,
    to_array,
)
from service.explain import CLASS_MAPS_OUTPUT, METHOD, heatmap_png
from service.fracture import FractureAnswer, read_fracture
from service.registry import LoadedModel
from service.runtime import OOD_OUTPUT, OUTPUT_NAME


def decode_array(
    data: bytes, spec: InputSpec, *, max_pixels: int, max_decode_bytes: int
) -> np.ndarray:
    """Encoded bytes to model input through the shared code, after the cost check."""
    check_decode_cost(data, max_decode_bytes, max_pixels)
    return load_array(data, spec, max_pixels=max_pixels)


@dataclass(frozen=True)
class PredictionWarning:
    code: str
    message: str


@dataclass(frozen=True)
class Explanation:
    """Where the model looked for ``label``: a heatmap the size of the image as shown."""

    method: str
    label: str
    heatmap_png: str  # base64 PNG, 8-bit gray, 0 = no evidence, 255 = the strongest
    fracture_heatmap_png: str | None = None  # the fracture map, 255 = probability 1


#: Said instead of an explanation by a model version without class maps.
NO_EXPLANATION = PredictionWarning(
    "no_explanation",
    "This model version exports no class maps, so it cannot show where it looked: models "
    "on a pretrained backbone (such as the shipped default) have them when exported or "
    "assembled by this version of the trainer.",
)


@dataclass(frozen=True)
class Ranked:
    """One image's answer: classes ranked from most to least likely."""

    labels: tuple[str, ...]
    probabilities: tuple[float, ...]
    warnings: tuple[PredictionWarning, ...]
    ood_score: float | None = None  # > 1: unlike the training images; None: no such check
    dicom: DicomFacts | None = None  # non-identifying facts of a DICOM upload
    explanation: Explanation | None = None  # asked for with explain=true
    fracture: FractureAnswer | None = None  # a model with fracture heads: is a bone broken

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def confidence(self) -> float:
        return self.probabilities[0]


@dataclass(frozen=True)
class Prepared:
    """A decoded upload: model input plus what the warnings and the answer need."""

    pixels: np.ndarray
    colourfulness: float
    size: tuple[int, int]  # (width, height) upright, as the user sees the image
    dicom: DicomFacts | None = None
    notes: tuple[DecodeNote, ...] = ()


def prepare(data: bytes, model: LoadedModel, max_pixels: int, max_decode_bytes: int) -> Prepared:
    """Decode and resize one upload; raises :class:`ImageDecodeError`."""
    check_decode_cost(data, max_decode_bytes, max_pixels)
    decoded = decode(data, max_pixels=max_pixels)
    return Prepared(
        pixels=to_array(decoded.image, model.spec),
        colourfulness=colourfulness(decoded.image),
        size=decoded.image.size,
        dicom=decoded.dicom,
        notes=decoded.notes,
    )


def rank(
    probabilities: np.ndarray,
    classes: tuple[str, ...],
    *,
    colour: float,
    confidence_threshold: float,
    colour_threshold: float,
    ood_score: float | None = None,
    notes: tuple[DecodeNote, ...] = (),
    dicom: DicomFacts | None = None,
) -> Ranked:
    """Sort classes by probability (renormalised in float64 so they sum to 1); the
    decoder's notes (e.g. ``multi_frame``) follow the model's own warnings."""
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
    if ood_score is not None and contract.is_unfamiliar(ood_score):  # NaN counts too
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
    warnings.extend(PredictionWarning(note.code, note.message) for note in notes)
    return Ranked(
        labels=tuple(classes[i] for i in order),
        probabilities=tuple(float(probs[i]) for i in order),
        warnings=tuple(warnings),
        ood_score=None if ood_score is None else round(float(ood_score), 4),
        dicom=dicom,
    )


def classify(
    uploads: list[bytes],
    model: LoadedModel,
    *,
    max_pixels: int,
    max_decode_bytes: int,
    confidence_threshold: float,
    colour_threshold: float,
    explain: bool = False,
) -> list[Ranked | ImageDecodeError]:
    """One answer per upload, in order; an undecodable upload yields its error instead.

    With ``explain``, each answer carries the heatmap of its top label from the model's
    class maps (:mod:`service.explain`), or a ``no_explanation`` warning from a model
    without them.
    """
    prepared: list[Prepared | ImageDecodeError] = []
    for data in uploads:
        try:
            prepared.append(prepare(data, model, max_pixels, max_decode_bytes))
        except ImageDecodeError as exc:
            prepared.append(exc)
    good = [p for p in prepared if isinstance(p, Prepared)]
    outputs = model.predictor.run(np.stack([p.pixels for p in good])) if good else {}
    probabilities = iter(outputs.get(OUTPUT_NAME, []))
    scores = iter(outputs[OOD_OUTPUT]) if OOD_OUTPUT in outputs else None
    maps = iter(outputs[CLASS_MAPS_OUTPUT]) if CLASS_MAPS_OUTPUT in outputs else None
    rules = model.fracture_rules  # read once at load (service.registry)
    has_fracture = rules is not None and FRACTURE_PROBABILITY in outputs
    fracture_probabilities = iter(outputs[FRACTURE_PROBABILITY]) if has_fracture else None
    fracture_maps = iter(outputs[FRACTURE_MAP]) if FRACTURE_MAP in outputs else None
    results: list[Ranked | ImageDecodeError] = []
    for item in prepared:
        if isinstance(item, ImageDecodeError):
            results.append(item)
            continue
        ranked = rank(
            next(probabilities),
            model.classes,
            colour=item.colourfulness,
            confidence_threshold=confidence_threshold,
            colour_threshold=colour_threshold,
            ood_score=None if scores is None else float(next(scores)),
            notes=item.notes,
            dicom=item.dicom,
        )
        class_maps = None if maps is None else next(maps)  # kept in step with the items
        fracture_map = None if fracture_maps is None else next(fracture_maps)
        contrast = float(np.std(item.pixels))
        if contrast < contract.BLANK_CONTRAST:
            ranked = replace(ranked, warnings=(*ranked.warnings, blank_warning(contrast)))
        if item.dicom is not None and not is_trained_body_part(item.dicom.body_part_examined):
            ranked = replace(ranked, warnings=(*ranked.warnings, body_part_warning(item.dicom)))
        if fracture_probabilities is not None and rules is not None:
            caveat = fracture_caveat(ranked.warnings)
            answer = read_fracture(
                next(fracture_probabilities), fracture_map, rules, item.size, caveat
            )
            ranked = replace(ranked, fracture=answer)
        if explain:
            ranked = explained(ranked, class_maps, model.classes, item.size, fracture_map)
        results.append(ranked)
    return results


#: Warnings that say the model cannot judge the image; with any of them a finding is
#: never "no fracture seen" (:func:`service.fracture.read_fracture`).
NOT_ASSESSABLE = ("unfamiliar_body_part", "unfamiliar_image", "not_radiograph", "blank_image")


def blank_warning(contrast: float) -> PredictionWarning:
    """The image is (nearly) one gray level: there is no radiograph in it to judge."""
    return PredictionWarning(
        "blank_image",
        f"The image is (nearly) uniform (its gray levels spread by {contrast:.1f}); there is "
        "no radiograph in it to judge, and the answer is meaningless.",
    )


def fracture_caveat(warnings: tuple[PredictionWarning, ...]) -> str | None:
    """Why the finding is held at "uncertain", or None."""
    if {w.code for w in warnings}.isdisjoint(NOT_ASSESSABLE):
        return None
    return "the model cannot judge this image (see the warnings), so it rules nothing out;"


def body_part_warning(dicom: DicomFacts) -> PredictionWarning:
    """The DICOM header names a body part the model never learned."""
    return PredictionWarning(
        "unfamiliar_body_part",
        f"The DICOM header says this image shows {dicom.body_part_examined}; the model "
        "learned from radiographs of the limbs, hip and shoulder only, so its answer is "
        "meaningless here.",
    )


def explained(
    ranked: Ranked,
    class_maps: np.ndarray | None,
    classes: tuple[str, ...],
    size: tuple[int, int],
    fracture_map: np.ndarray | None = None,
) -> Ranked:
    """``ranked`` with the heatmap of its top label (and of the fracture map, for a model
    with one), or the ``no_explanation`` warning (also for maps not shaped ``(h, w,
    classes)``: a foreign model's output is no reason to fail the answer)."""
    if class_maps is None or class_maps.ndim != 3 or class_maps.shape[-1] != len(classes):
        return replace(ranked, warnings=(*ranked.warnings, NO_EXPLANATION))
    label = classes.index(ranked.label)
    heatmap = heatmap_png(class_maps[:, :, label], size)
    fracture = None
    if fracture_map is not None and fracture_map.ndim == 2:
        fracture = heatmap_png(fracture_map, size, full_scale=1.0)
    return replace(ranked, explanation=Explanation(METHOD, ranked.label, heatmap, fracture))


def predict_pixels(pixels: np.ndarray, model: LoadedModel) -> np.ndarray:
    """Raw probabilities for already-preprocessed pixels (TF Serving's float input)."""
    return model.predictor.predict(np.asarray(pixels, dtype=np.float32))
