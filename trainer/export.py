"""Write a trained Keras model as the next version of ``models/<name>/<N>/``.

Everything goes into a hidden temporary folder beside the versions and is renamed into
place only when complete, so readers (the service's hot reload, TF Serving) never see a
half-written version, and a failed export leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from modelio import artifact, contract, integrity
from modelio.images import PREPROCESSING_DESCRIPTION, InputSpec
from trainer.errors import TrainerError
from trainer.predict import named_outputs

#: The exported TFLite model must reproduce the SavedModel's probabilities within this
#: tolerance (measured: up to 3e-5 through a 60-layer pretrained backbone, float32 on two
#: runtimes; under 1e-6 for the small models), and its OOD score (a sum of a thousand
#: squares, compared with 1) within this relative one.
TFLITE_TOLERANCE = 1e-4
TFLITE_SCORE_TOLERANCE = 1e-3


def ensure_writable(models_dir: Path, name: str) -> Path:
    """Create ``models_dir/name`` and prove we can write there, before any training."""
    target = Path(models_dir) / name
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise TrainerError(f"cannot write models to {target}: {exc.strerror or exc}") from exc
    return target


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in (
        "bonefrac",
        "tensorflow-cpu",
        "tensorflow",
        "keras",
        "numpy",
        "pillow",
        "scikit-learn",
        "keras-tuner",
    ):
        try:
            versions[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def _bytes_to_input(spec: InputSpec) -> Callable[[Any], Any]:
    """TensorFlow twin of :func:`modelio.images.load_array` for the bytes signature.

    Differences from the shared Python path (documented in metadata): no EXIF rotation,
    no 16-bit stretching, alpha dropped instead of composited; TIFF is not decoded.
    """
    import tensorflow as tf  # noqa: PLC0415 - heavy import kept out of module import

    def decode_one(encoded: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        if spec.channels == 1:
            image = tf.image.rgb_to_grayscale(image)
        image = tf.image.resize(
            tf.cast(image, tf.float32),
            (spec.height, spec.width),
            method="bilinear",
            antialias=True,
        )
        return tf.clip_by_value(image, 0.0, 255.0)

    def batch(encoded: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(
            decode_one,
            encoded,
            fn_output_signature=tf.TensorSpec((spec.height, spec.width, spec.channels), tf.float32),
        )

    return batch


def output_difference(name: str, got: np.ndarray, expected: np.ndarray) -> float:
    """The largest difference of one output: absolute for probabilities; relative to the
    value (at least 1) for a score such as ``ood_score``, whose scale is its threshold's;
    relative to the largest value (at least 1) for ``class_maps``, which are shown scaled
    to their peak, so an error small next to the peak is invisible."""
    got, expected = np.asarray(got), np.asarray(expected)
    error = np.abs(got - expected)
    if name == contract.CLASS_MAPS:
        return float(np.max(error) / max(float(np.max(np.abs(expected), initial=0.0)), 1.0))
    if name != contract.PROBABILITIES:
        error = error / np.maximum(np.abs(expected), 1.0)
    return float(np.max(error))


def _write_saved_model(model: Any, spec: InputSpec, path: Path) -> None:
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    to_input = _bytes_to_input(spec)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda images: named_outputs(model, images),
        input_signature=[
            tf.TensorSpec((None, spec.height, spec.width, spec.channels), tf.float32, name="images")
        ],
    )
    archive.add_endpoint(
        name="serve_bytes",
        fn=lambda image_bytes: named_outputs(model, to_input(image_bytes)),
        input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")],
    )
    archive.write_out(str(path), verbose=False)


def _write_tflite(saved_model: Path, target: Path, probe: np.ndarray) -> dict[str, float]:
    """Convert the SavedModel's float signature to TFLite; each output's max difference
    (:func:`output_difference`)."""
    import tensorflow as tf  # noqa: PLC0415

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model), signature_keys=["serving_default"]
    )
    target.write_bytes(converter.convert())

    reference = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    expected = {k: v.numpy() for k, v in reference(images=tf.constant(probe)).items()}
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    interpreter = Interpreter(model_path=str(target))
    runner = interpreter.get_signature_runner("serving_default")
    answers = [runner(images=probe[i : i + 1]) for i in range(len(probe))]
    return {
        name: output_difference(name, np.concatenate([a[name] for a in answers]), values)
        for name, values in expected.items()
    }


def export_version(
    model: Any,
    *,
    models_dir: Path,
    name: str,
    classes: list[str],
    spec: InputSpec,
    metadata: dict[str, Any],
    probe: np.ndarray,
    write_reports: Callable[[Path], None] | None = None,
    head_arrays: dict[str, np.ndarray] | None = None,
) -> Path:
    """Export ``model`` as the next version and return its folder.

    ``probe`` is a small batch of real inputs used to check the TFLite copy against the
    SavedModel. ``write_reports`` fills ``reports/`` inside the temporary folder.
    ``head_arrays`` (a pretrained backbone's fitted head) go into ``head.npz``: with the
    backbone's weight package, they are all it takes to rebuild the model
    (:mod:`trainer.assemble`).
    """
    model_root = ensure_writable(models_dir, name)
    staging = model_root / f".staging-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir()
        _write_saved_model(model, spec, staging)
        # Real images, plus uniform black, gray and white ones: a blank upload has no
        # gradient at all, the case where a 0/0 hides (the service warms up on gray).
        uniform = np.stack([np.full(probe.shape[1:], v, np.float32) for v in (0, 127, 255)])
        tflite_diff = _write_tflite(
            staging,
            staging / artifact.TFLITE_FILE,
            np.concatenate([probe.astype(np.float32), uniform]),
        )
        for output, difference in tflite_diff.items():
            tolerance = (
                TFLITE_TOLERANCE if output == contract.PROBABILITIES else TFLITE_SCORE_TOLERANCE
            )
            if not difference <= tolerance:  # NaN included
                raise TrainerError(
                    f"TFLite export differs from the SavedModel by {difference:.2e} in {output}"
                )
        if head_arrays is not None:
            arrays: dict[str, Any] = dict(head_arrays)  # names never clash with savez's own
            np.savez(staging / artifact.HEAD_FILE, **arrays)
        if write_reports is not None:
            reports = staging / artifact.REPORTS_DIR
            reports.mkdir()
            write_reports(reports)
        document = {
            "schema_version": artifact.SCHEMA_VERSION,
            "name": name,
            "version": None,  # set under the lock in _publish
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "classes": list(classes),
            "input": spec.to_dict(),
            "preprocessing": PREPROCESSING_DESCRIPTION,
            "signatures": _signature_docs(
                spec, len(classes), "out_of_distribution" in metadata, _class_map_grid(model)
            ),
            # machine-readable: what the service, benchmarks and TF Serving clients read
            "outputs": outputs_block(model, len(classes)),
            "files": {"saved_model": artifact.SAVED_MODEL_FILE, "tflite": artifact.TFLITE_FILE},
            "tflite_max_abs_diff": tflite_diff[contract.PROBABILITIES],
            **({"tflite_max_diff": tflite_diff} if len(tflite_diff) > 1 else {}),
            "libraries": library_versions(),
            **metadata,
        }
        document[integrity.INTEGRITY_KEY] = integrity.integrity_record(staging, document)
        return _publish(staging, model_root, document)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _named_graph_outputs(model: Any) -> dict[str, Any]:
    """A multi-output Keras model's outputs by name; ``{}`` for a single output (the
    probabilities) or a test's stand-in model, which has no ``output`` at all."""
    output = getattr(model, "output", None)
    return output if isinstance(output, dict) else {}


def _grid(outputs: dict[str, Any], name: str) -> tuple[int, int] | None:
    """The ``(h, w)`` grid of a per-position output, or None without that output."""
    tensor = outputs.get(name)
    return None if tensor is None else (int(tensor.shape[1]), int(tensor.shape[2]))


def _class_map_grid(model: Any) -> tuple[int, int] | None:
    """The ``(h, w)`` grid of a model's ``class_maps`` output, or None without one."""
    return _grid(_named_graph_outputs(model), contract.CLASS_MAPS)


def outputs_block(model: Any, num_classes: int) -> list[dict[str, Any]]:
    """metadata.json → ``outputs`` for ``model`` (:func:`modelio.contract.outputs_block`).

    An output the contract does not name is refused: every reader (service, page,
    benchmarks, TF Serving clients) finds outputs by the contract's names.
    """
    outputs = _named_graph_outputs(model)
    unknown = sorted(set(outputs) - set(contract.OUTPUT_NAMES))
    if unknown:
        raise TrainerError(f"model outputs {unknown} are not in modelio.contract.OUTPUT_NAMES")
    return contract.outputs_block(
        num_classes,
        ood=contract.OOD_SCORE in outputs,
        class_map_grid=_grid(outputs, contract.CLASS_MAPS),
        fracture=contract.FRACTURE_PROBABILITY in outputs,
        fracture_map_grid=_grid(outputs, contract.FRACTURE_MAP),
    )


def _signature_docs(
    spec: InputSpec, num_classes: int, ood: bool, grid: tuple[int, int] | None = None
) -> dict[str, Any]:
    """What each SavedModel signature takes and returns, for metadata.json."""
    shape = f"[batch,{spec.height},{spec.width},{spec.channels}]"
    outputs = {contract.PROBABILITIES: f"float32[batch,{num_classes}] softmax"}
    if ood:
        outputs[contract.OOD_SCORE] = (
            "float32[batch] distance from the training images; > 1: unlike them"
        )
    if grid is not None:
        outputs[contract.CLASS_MAPS] = (
            f"float32[batch,{grid[0]},{grid[1]},{num_classes}] class activation maps over the "
            "image (stretched to the model's input): each class's logit minus the mean of all "
            "logits, less the head's bias, split over positions (their average gives it back)"
        )
    return {
        "serving_default": {
            "inputs": {"images": f"float32{shape} raw pixels 0..255"},
            "outputs": outputs,
        },
        "serve_bytes": {
            "inputs": {"image_bytes": "string[batch] encoded JPEG/PNG/BMP"},
            "outputs": outputs,
            "differences": "decoded by TensorFlow: no EXIF rotation, no 16-bit stretch, "
            "alpha dropped, no TIFF; outputs agree with the shared preprocessing to about 1e-2",
        },
    }


def _publish(staging: Path, model_root: Path, document: dict[str, Any]) -> Path:
    """Number the staged version and rename it into place, one exporter at a time.

    The number is chosen under an exclusive lock at the very end, so two trainings that
    finish together get consecutive versions instead of one losing its work.
    """
    with (model_root / ".export.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        versions = artifact.list_versions(model_root.parent, model_root.name)
        version = (versions[-1] + 1) if versions else 1
        while (model_root / str(version)).exists():  # a folder someone made by hand
            version += 1
        document["version"] = version
        meta = staging / artifact.METADATA_FILE
        with meta.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps(document, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        final = model_root / str(version)
        staging.rename(final)
    return final
