"""Runtimes that turn a batch of preprocessed images into class probabilities.

The exported version holds the same model twice: ``model.tflite`` and a SavedModel. The
TFLite flat buffer is the fast path (2-3x the SavedModel signature on CPU, same outputs
to ~1e-8, and no TensorFlow needed), run by OpenVINO's CPU plugin, which reads the flat
buffer itself, or by ai-edge-litert (LiteRT): the same answers to 1e-4, and OpenVINO, the
default when installed, spends less CPU per image on the shipped model (docs/service.md,
"More images per second"). The SavedModel is the fallback for a version without a TFLite
file, used only when the settings ask for it (``BONEFRAC_RUNTIME=auto`` or
``saved_model``) and TensorFlow is installed.

Neither a TFLite interpreter nor an OpenVINO infer request is thread-safe, so each
predictor lends its runners through a :class:`RunnerPool`. By default it holds one
single-threaded runner per core for requests under load (no barrier between threads to
wait at: the most images per second) and one runner on every core for a request that
finds no other inference running (the lowest latency for one client).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from modelio import contract
from modelio.artifact import SAVED_MODEL_FILE, TFLITE_FILE, ArtifactError
from modelio.images import InputSpec

SIGNATURE = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAME = contract.PROBABILITIES
#: Models on a pretrained backbone also output how unlike the training images each input
#: is (``trainer.heads.OodModel``), over its threshold.
OOD_OUTPUT = contract.OOD_SCORE


class Predictor(Protocol):
    """A model's outputs for float32 ``(N, H, W, C)`` pixels in 0..255."""

    runtime: str
    input_shape: tuple[int, ...]  # (H, W, C) the model was exported for

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name: ``probabilities`` (N, classes), maybe ``ood_score`` (N,)
        and ``class_maps`` (N, h, w, classes)."""
        ...

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Only the probabilities (N, classes)."""
        ...


class RunnerPool:
    """Lends runners to one thread at a time: the solo runner when nothing else runs.

    ``solo`` (may be None) is used only by a request that finds every runner idle, so it
    never runs beside another inference for long; the ``shared`` ones serve the rest.
    """

    def __init__(self, solo: Any | None, shared: list[Any]) -> None:
        if not shared:
            raise ValueError("a runner pool needs at least one shared runner")
        self._solo = solo
        self._shared: queue.Queue[Any] = queue.Queue()
        for runner in shared:
            self._shared.put(runner)
        self._lock = threading.Lock()
        self._busy = 0  # requests holding or waiting for a runner
        self.solo_runs = 0  # what the tests watch

    @contextmanager
    def lend(self) -> Iterator[Any]:
        with self._lock:
            solo = self._solo is not None and self._busy == 0
            self._busy += 1
            if solo:
                self.solo_runs += 1
        runner = self._solo if solo else self._shared.get()
        try:
            yield runner
        finally:
            if not solo:
                self._shared.put(runner)
            with self._lock:
                self._busy -= 1


def one_by_one(
    images: np.ndarray, infer: Callable[[np.ndarray], Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Every output of ``infer`` over ``images`` fed one ``(1, H, W, C)`` image at a time,
    copied out of the runtime's buffers and stacked in order."""
    rows: dict[str, list[np.ndarray]] = {}
    for i in range(len(images)):
        for name, out in infer(images[i : i + 1]).items():
            rows.setdefault(name, []).append(np.array(out, dtype=np.float32, copy=True))
    if not rows:
        return {OUTPUT_NAME: np.zeros((0, 0), np.float32)}
    return {name: np.concatenate(parts) for name, parts in rows.items()}


class TFLitePredictor:
    """``model.tflite`` on ai-edge-litert: ``interpreters`` of ``threads`` threads each,
    plus, with ``solo_threads``, one interpreter on that many for a request alone."""

    runtime = "tflite"

    def __init__(
        self,
        path: Path,
        *,
        interpreters: int = 1,
        threads: int | None = None,
        solo_threads: int = 0,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 - optional dep

        content = Path(path).read_bytes()

        def runner(num_threads: int | None) -> Any:
            interpreter = Interpreter(model_content=content, num_threads=num_threads)
            try:
                return interpreter.get_signature_runner(SIGNATURE)
            except ValueError as exc:
                raise ArtifactError(f"{path} has no '{SIGNATURE}' signature") from exc

        shared = [runner(threads) for _ in range(max(1, interpreters))]
        self._pool = RunnerPool(runner(solo_threads) if solo_threads else None, shared)
        details = shared[0].get_input_details().get(INPUT_NAME)
        if details is None:
            raise ArtifactError(f"{path}: signature '{SIGNATURE}' has no input '{INPUT_NAME}'")
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in details["shape_signature"][1:])

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """One image per invoke: the interpreter keeps its batch-1 buffers (no realloc)."""
        with self._pool.lend() as runner:
            return one_by_one(images, lambda image: runner(**{INPUT_NAME: image}))

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)[OUTPUT_NAME]


#: Arithmetic the OpenVINO runtime may run the model in. ``bf16`` rounds every activation
#: to 8 bits of mantissa: about 1.7x the images per second on CPUs with AMX or AVX-512
#: BF16, at a cost measured in grouped cross-validation (docs/service.md, "More images
#: per second").
PRECISIONS = ("f32", "bf16")


def fix_to_one_image(model: Any) -> None:
    """Fix an OpenVINO model's input (read from ``model.tflite``, whose batch is dynamic)
    to one image of its own size: the CPU plugin then plans the graph once and fuses
    more (10-16 % less CPU per image in float32 and 9-22 % in bf16 on the shipped model
    than with the dynamic batch, over three runs; docs/service.md, "More images per
    second")."""
    model.reshape([1, *list(model.inputs[0].get_partial_shape())[1:]])


class OpenVINOPredictor:
    """``model.tflite`` on OpenVINO's CPU plugin, which reads the TFLite flat buffer itself.

    The graph is the same file the TFLite runtime runs (no conversion step, no second
    artefact); in float32 its answers agree with TFLite's to about 1e-4. It is compiled
    for one image (:func:`fix_to_one_image`), as the TFLite interpreters are run.
    ``streams``
    inferences of ``threads`` threads each run at once (OpenVINO's streams), plus, with
    ``solo_threads``, a second compilation on that many threads for a request alone
    (:class:`RunnerPool`). The output names come from the TFLite file's own signature
    (OpenVINO names outputs by tensor, not by signature key).
    """

    def __init__(
        self,
        path: Path,
        *,
        streams: int = 1,
        threads: int | None = None,
        solo_threads: int = 0,
        precision: str = "f32",
    ) -> None:
        import openvino as ov  # noqa: PLC0415 - optional dep
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 - optional dep

        if precision not in PRECISIONS:
            raise ArtifactError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
        signature = Interpreter(model_path=str(path)).get_signature_runner(SIGNATURE)
        by_tensor = {d["name"]: key for key, d in signature.get_output_details().items()}
        core = ov.Core()
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if precision == "bf16" and "BF16" not in capabilities:
            precision = "f32"  # OpenVINO would silently run float32 anyway: say so
        self.runtime = f"openvino-{precision}"
        model = core.read_model(str(path))
        fix_to_one_image(model)
        streams = max(1, streams)
        shared = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": precision,
                "NUM_STREAMS": streams,
                "INFERENCE_NUM_THREADS": streams * (threads or 1),
            },
        )
        self._names = []
        for output in shared.outputs:
            names = output.get_names() & by_tensor.keys()
            if not names:
                raise ArtifactError(
                    f"{path}: OpenVINO's output {output.get_any_name()} is not in the signature"
                )
            self._names.append(by_tensor[names.pop()])
        solo = None
        if solo_threads:
            solo = core.compile_model(
                model,
                "CPU",
                {
                    "INFERENCE_PRECISION_HINT": precision,
                    "PERFORMANCE_HINT": "LATENCY",
                    "INFERENCE_NUM_THREADS": solo_threads,
                },
            ).create_infer_request()
        self._pool = RunnerPool(solo, [shared.create_infer_request() for _ in range(streams)])
        shape = shared.inputs[0].get_partial_shape()
        self.input_shape = tuple(int(d.get_length()) for d in list(shape)[1:])

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """One image per inference, on the graph compiled for one."""

        with self._pool.lend() as request:

            def infer(image: np.ndarray) -> dict[str, np.ndarray]:
                request.infer({0: np.ascontiguousarray(image, np.float32)})
                outputs = enumerate(self._names)
                return {name: request.get_output_tensor(i).data for i, name in outputs}

            return one_by_one(images, infer)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)[OUTPUT_NAME]


class SavedModelPredictor:
    """The SavedModel's ``serving_default`` signature; needs TensorFlow. Thread-safe."""

    runtime = "saved_model"

    def __init__(self, path: Path) -> None:
        import tensorflow as tf  # noqa: PLC0415 - optional, heavy

        self._tf = tf
        self._loaded = tf.saved_model.load(str(path))
        try:
            self._signature = self._loaded.signatures[SIGNATURE]
        except KeyError as exc:
            raise ArtifactError(f"{path} has no '{SIGNATURE}' signature") from exc
        spec = self._signature.structured_input_signature[1].get(INPUT_NAME)
        if spec is None:
            raise ArtifactError(f"{path}: signature '{SIGNATURE}' has no input '{INPUT_NAME}'")
        self.input_shape = tuple(int(d or -1) for d in spec.shape[1:])

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        result = self._signature(**{INPUT_NAME: self._tf.constant(images, self._tf.float32)})
        return {name: np.asarray(value.numpy(), dtype=np.float32) for name, value in result.items()}

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)[OUTPUT_NAME]


def load_predictor(
    version_path: Path,
    *,
    interpreters: int = 1,
    threads: int | None = None,
    solo_threads: int = 0,
    runtime: str = "auto",
    precision: str = "f32",
) -> Predictor:
    """The runtime ``runtime`` allows for a version folder, or :class:`ArtifactError`.

    ``openvino`` (the service's default when installed) runs ``model.tflite`` on OpenVINO
    (``interpreters`` streams, in ``precision``); ``tflite`` runs it on LiteRT. Neither
    imports TensorFlow: a version without ``model.tflite`` is refused, so one broken
    export cannot add ~620 MB of TensorFlow to the process for good and stall the
    version poll while it imports.
    ``saved_model`` runs only the SavedModel; ``auto`` prefers TFLite and falls back to
    the SavedModel.
    """
    version_path = Path(version_path)
    tflite = version_path / TFLITE_FILE
    if runtime == "openvino":
        return _load_openvino(
            tflite,
            streams=interpreters,
            threads=threads,
            solo_threads=solo_threads,
            precision=precision,
        )
    if runtime != "saved_model" and tflite.is_file():
        try:
            return TFLitePredictor(
                tflite, interpreters=interpreters, threads=threads, solo_threads=solo_threads
            )
        except ArtifactError:
            raise
        except (ValueError, RuntimeError, OSError) as exc:
            raise ArtifactError(f"{tflite} cannot be loaded: {exc}") from exc
    if runtime == "tflite":
        raise ArtifactError(
            f"{version_path} has no {TFLITE_FILE}; the service runs only TFLite "
            "(BONEFRAC_RUNTIME=tflite). Re-export it with the trainer, or set "
            "BONEFRAC_RUNTIME=auto to run its SavedModel with TensorFlow"
        )
    if (version_path / SAVED_MODEL_FILE).is_file():
        try:
            return SavedModelPredictor(version_path)
        except ImportError as exc:
            raise ArtifactError(
                f"{version_path} needs TensorFlow to run its SavedModel "
                f"(BONEFRAC_RUNTIME={runtime}), and it is not installed"
            ) from exc
        except ArtifactError:
            raise
        except Exception as exc:  # TensorFlow raises many types for a bad SavedModel
            raise ArtifactError(f"{version_path} SavedModel cannot be loaded: {exc}") from exc
    if runtime == "saved_model":
        raise ArtifactError(
            f"{version_path} has no {SAVED_MODEL_FILE} (BONEFRAC_RUNTIME=saved_model)"
        )
    raise ArtifactError(f"{version_path} holds neither {TFLITE_FILE} nor {SAVED_MODEL_FILE}")


def _load_openvino(
    tflite: Path, *, streams: int, threads: int | None, solo_threads: int, precision: str
) -> Predictor:
    """``BONEFRAC_RUNTIME=openvino``: the version's ``model.tflite`` on OpenVINO."""
    if not tflite.is_file():
        raise ArtifactError(
            f"{tflite.parent} has no {TFLITE_FILE}, which the OpenVINO runtime runs "
            "(BONEFRAC_RUNTIME=openvino). Re-export it with the trainer"
        )
    try:
        return OpenVINOPredictor(
            tflite,
            streams=streams,
            threads=threads,
            solo_threads=solo_threads,
            precision=precision,
        )
    except ImportError as exc:
        raise ArtifactError(
            "BONEFRAC_RUNTIME=openvino needs OpenVINO, and it is not installed "
            "(the service extra installs it: pip install 'bonefrac[service]')"
        ) from exc
    except ArtifactError:
        raise
    except Exception as exc:  # OpenVINO raises its own types for a bad graph
        raise ArtifactError(f"{tflite} cannot be loaded by OpenVINO: {exc}") from exc


def warm_up(predictor: Predictor, spec: InputSpec, num_classes: int) -> None:
    """Run the model once and check its output, so a broken file fails here, not live."""
    expected = (spec.height, spec.width, spec.channels)
    if predictor.input_shape != expected:
        raise ArtifactError(
            f"the model takes {predictor.input_shape} but metadata.json says {expected}"
        )
    probe = np.full((1, spec.height, spec.width, spec.channels), 127.0, np.float32)
    try:
        out = predictor.predict(probe)
    except Exception as exc:  # any runtime failure means: do not serve this version
        raise ArtifactError(f"the model fails on a probe input: {exc}") from exc
    if out.shape != (1, num_classes):
        raise ArtifactError(
            f"the model returns shape {tuple(out.shape)}, expected (1, {num_classes}) "
            "for the classes in metadata.json"
        )
    if not np.all(np.isfinite(out)) or abs(float(out.sum()) - 1.0) > 1e-3:
        raise ArtifactError("the model's output is not a probability distribution")
