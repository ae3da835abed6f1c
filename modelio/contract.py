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

#: The three answers to "is a bone broken?".
Finding = Literal["fracture", "no_fracture", "uncertain"]
FINDINGS: Final = ("fracture", "no_fracture", "uncertain")


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
