"""The model contract, spelled once: output names, what each means, and the warning rules.

The trainer builds graphs whose outputs carry these names, ``metadata.json`` describes
them in a machine-readable ``outputs`` block made here (:func:`outputs_block`), and the
service, the page, the benchmarks and the TF Serving docs read the names and rules from
this module instead of repeating string literals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

#: Type probabilities, ``float32[batch, classes]``, a softmax over ``metadata.classes``.
PROBABILITIES: Final = "probabilities"
#: Distance from the training radiographs over its threshold, ``float32[batch]``.
OOD_SCORE: Final = "ood_score"
#: Per-position evidence for each type, ``float32[batch, h, w, classes]`` (heatmaps).
CLASS_MAPS: Final = "class_maps"
#: Probability that the radiograph shows a fracture, ``float32[batch]``.
FRACTURE_PROBABILITY: Final = "fracture_probability"
#: Per-position probability that a fracture lies there, ``float32[batch, h, w]``.
FRACTURE_MAP: Final = "fracture_map"

#: Every output name a model of this project may have, in the order they are documented.
OUTPUT_NAMES: Final = (PROBABILITIES, OOD_SCORE, CLASS_MAPS, FRACTURE_PROBABILITY, FRACTURE_MAP)

#: An ``ood_score`` above this is an ``unfamiliar_image`` warning (a NaN counts as above).
OOD_WARN_ABOVE: Final = 1.0
#: A model input whose gray levels spread less than this (standard deviation, 0..255) is
#: a ``blank_image``: nothing to judge. The OOD model alone let pure black and white
#: frames pass once it learned from two datasets' radiographs.
BLANK_CONTRAST: Final = 2.0

#: The three answers to "is a bone broken?".
Finding = Literal["fracture", "no_fracture", "uncertain"]
FINDINGS: Final = ("fracture", "no_fracture", "uncertain")
#: What an answer says first for each finding, for a person (service summary, page).
FINDING_HEADLINES: Final[dict[str, str]] = {
    "fracture": "Fracture likely",
    "no_fracture": "No fracture seen",
    "uncertain": "Uncertain: a fracture can be neither ruled in nor ruled out",
}


def is_unfamiliar(ood_score: float) -> bool:
    """True when the score is above :data:`OOD_WARN_ABOVE` or not a number."""
    return not ood_score <= OOD_WARN_ABOVE


def finding(probability: float, rule_out: float, rule_in: float) -> Finding:
    """``fracture`` at or above ``rule_in``, ``no_fracture`` below ``rule_out``, else
    ``uncertain`` (a NaN probability is uncertain: nothing is claimed from it)."""
    if probability >= rule_in:
        return "fracture"
    if probability < rule_out:
        return "no_fracture"
    return "uncertain"


@dataclass(frozen=True)
class OutputSpec:
    """One graph output as ``metadata.json`` → ``outputs`` describes it."""

    name: str
    dtype: str
    shape: list[str | int]
    meaning: str


def outputs_block(
    num_classes: int,
    *,
    ood: bool = False,
    class_map_grid: tuple[int, int] | None = None,
    fracture_map_grid: tuple[int, int] | None = None,
    fracture: bool = False,
) -> list[dict[str, Any]]:
    """The machine-readable ``outputs`` list of a model with these outputs."""
    specs = [
        OutputSpec(
            PROBABILITIES,
            "float32",
            ["batch", num_classes],
            "softmax over the fracture types in metadata.classes (order kept): if this is a "
            "fracture, how likely each type is",
        )
    ]
    if ood:
        specs.append(
            OutputSpec(
                OOD_SCORE,
                "float32",
                ["batch"],
                "distance of the image's features from the training radiographs over its "
                f"threshold; above {OOD_WARN_ABOVE:g} the image is unlike them",
            )
        )
    if class_map_grid is not None:
        specs.append(
            OutputSpec(
                CLASS_MAPS,
                "float32",
                ["batch", *class_map_grid, num_classes],
                "per-position evidence for each type over the others (class activation "
                "maps of the linear head); rows and columns span the image as shown",
            )
        )
    if fracture:
        specs.append(
            OutputSpec(
                FRACTURE_PROBABILITY,
                "float32",
                ["batch"],
                "probability that the radiograph shows a fracture; metadata.fracture "
                "gives the thresholds and what they mean",
            )
        )
    if fracture_map_grid is not None:
        specs.append(
            OutputSpec(
                FRACTURE_MAP,
                "float32",
                ["batch", *fracture_map_grid],
                "per-position probability that a fracture lies there; connected cells above "
                "metadata.fracture.region_threshold become the answer's boxes",
            )
        )
    return [asdict(spec) for spec in specs]


def output_names(metadata: dict[str, Any]) -> tuple[str, ...]:
    """The output names a version's metadata declares (older versions: from signatures)."""
    block = metadata.get("outputs")
    if isinstance(block, list):
        return tuple(str(o.get("name")) for o in block if isinstance(o, dict))
    signature = metadata.get("signatures", {}).get("serving_default", {})
    return tuple(signature.get("outputs", {}))


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold on ``fracture_probability`` and what it kept in grouped CV."""

    threshold: float
    sensitivity: float
    specificity: float


def _point(block: dict[str, Any]) -> OperatingPoint:
    return OperatingPoint(
        threshold=float(block["threshold"]),
        sensitivity=float(block["sensitivity"]),
        specificity=float(block["specificity"]),
    )


@dataclass(frozen=True)
class FractureRules:
    """How a version's fracture outputs become a finding and boxes (``metadata.fracture``).

    ``rule_out``: below it the answer is ``no_fracture`` (chosen to keep a high
    sensitivity); ``rule_in``: at or above it, ``fracture`` (chosen for a high
    specificity); between the two, ``uncertain``. ``region_threshold``: map cells at or
    above it form the boxes. Sensitivity and specificity are measured on held-out
    folds of grouped cross-validation, never on a test split.
    """

    rule_out: OperatingPoint
    rule_in: OperatingPoint
    region_threshold: float
    measured_on: str

    def finding(self, probability: float) -> Finding:
        return finding(probability, self.rule_out.threshold, self.rule_in.threshold)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> FractureRules | None:
        """The rules of a version, or None for one without fracture heads (or unreadable
        rules: the service then answers without a fracture block rather than guess)."""
        block = metadata.get("fracture")
        if not isinstance(block, dict):
            return None
        try:
            rules = cls(
                rule_out=_point(block["rule_out"]),
                rule_in=_point(block["rule_in"]),
                region_threshold=float(block["region_threshold"]),
                measured_on=str(block.get("measured_on", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None
        numbers = (
            rules.rule_out.sensitivity,
            rules.rule_out.specificity,
            rules.rule_in.sensitivity,
            rules.rule_in.specificity,
            rules.region_threshold,
        )
        if not all(0.0 <= n <= 1.0 for n in numbers):  # NaN fails too
            return None
        if not 0.0 <= rules.rule_out.threshold <= rules.rule_in.threshold <= 1.0:
            return None
        return rules


#: DICOM Body Part Examined terms (PS3.16 Annex L, with common vendor spellings) of the
#: parts the default model's radiographs show: limbs, hands, feet, hip and shoulder
#: girdles. ``EXTREMITY`` is what many limb plates say. A header that names any other
#: part (``CHEST``, ``SKULL``, ``ABDOMEN``, ...) is warned as unfamiliar; a header that
#: names none is judged by the image alone (the OOD score).
TRAINED_BODY_PARTS: Final = frozenset(
    {
        "EXTREMITY",
        "UPPEREXTREMITY",
        "LOWEREXTREMITY",
        "ARM",
        "UPPERARM",
        "HUMERUS",
        "ELBOW",
        "FOREARM",
        "RADIUS",
        "ULNA",
        "WRIST",
        "HAND",
        "FINGER",
        "THUMB",
        "SHOULDER",
        "CLAVICLE",
        "SCAPULA",
        "HIP",
        "PELVIS",
        "FEMUR",
        "THIGH",
        "KNEE",
        "PATELLA",
        "LEG",
        "LOWERLEG",
        "TIBIA",
        "FIBULA",
        "ANKLE",
        "FOOT",
        "HEEL",
        "CALCANEUS",
        "TOE",
    }
)


#: Words a Body Part Examined may carry beside the part itself.
_SIDE_WORDS = frozenset({"L", "R", "LEFT", "RIGHT", "LT", "RT", "BILATERAL", "BOTH"})


def is_trained_body_part(body_part: str | None) -> bool:
    """False only when a header names a part outside :data:`TRAINED_BODY_PARTS` (sides
    and plurals ignored: ``LEFT KNEE``, ``FINGERS``)."""
    if not body_part:
        return True
    letters = "".join(c if c.isalpha() else " " for c in body_part.upper())
    words = [w for w in letters.split() if w not in _SIDE_WORDS]
    if not words:
        return True
    joined = "".join(words)
    return joined in TRAINED_BODY_PARTS or joined.removesuffix("S") in TRAINED_BODY_PARTS
