"""Where more images per second could come from, measured in process on the shipped model.

Nothing here changes the trainer or the exported graph; every variant is made on the
side from the version folder (and, for the mirror pass, from the trainer's own backbone
builder) and timed on the same cores in the same run:

1. **threads**: the float32 ``model.tflite`` (XNNPACK), batch 1, on 1 and 2 threads;
2. **int8**: full-integer static quantisation of the version's SavedModel by
   TensorFlow's converter, calibrated on training radiographs (``--calibrate`` of them),
   float input and outputs kept, run by XNNPACK's QS8 kernels; its latency, and its
   agreement with float32 on other radiographs (top-1 agreement, largest and mean
   probability difference, top-1 of both against the folder labels). The shipped head
   was fitted on these same radiographs, so this is a check of the arithmetic, not an
   accuracy figure: shipping it needs the grouped cross-validation of
   ``experiments/quantisation.py`` with this variant;
3. **batching**: time per image at batch 1, 2, 4 and 8 in one invoke (what request
   micro-batching inside the service could gain at best);
4. **concurrency**: 8 client threads through one interpreter on 2 threads (the
   service's default) and through 2 interpreters on 1 thread each;
5. **mirror pass**: the EfficientNet-Lite2 feature extractor at the model's size with
   and without the mirror average (``trainer.backbones.feature_extractor``), converted
   to TFLite and timed alike; its accuracy side is docs/experiments.md's;
6. **OpenVINO**: the service's own predictors (``service.runtime``) on the same
   ``model.tflite``: LiteRT float32 against OpenVINO float32 and bf16, alternated at
   batch 1; OpenVINO's CPU time per image on one thread with the file's dynamic batch
   and compiled for one image (as the service does); 1 and 8 client threads through
   the service's runner pools (one interpreter on both cores, the old default; two on
   one core each; and the default: two on one core plus a solo one on both, for LiteRT
   and OpenVINO); top-1
   agreement with LiteRT (the accuracy in grouped
   cross-validation is ``experiments/runtime_precision.py``'s). ``--skip-int8
   --skip-mirror`` leaves only this part (no TensorFlow needed).

Usage::

    nice -n 10 .venv/bin/python benchmarks/model_speed.py --models /tmp/peers-models

The machine is shared: run it when nothing else runs, or read ratios within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelio import contract  # noqa: E402
from modelio.artifact import read_metadata  # noqa: E402
from modelio.images import InputSpec, load_array  # noqa: E402

REAL_DATA = REPO.parent / "shared/datasets/bone-break-classification"
SIGNATURE = "serving_default"


def interpreter(content: bytes, threads: int, batch: int = 1):  # noqa: ANN201
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    interp = Interpreter(model_content=content, num_threads=threads)
    if batch != 1:
        detail = interp.get_input_details()[0]
        interp.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
    interp.allocate_tensors()
    return interp


def run(interp, pixels: np.ndarray) -> dict[str, np.ndarray]:  # noqa: ANN001
    """Every output by name (the signature's names) for a batch of pixels."""
    runner = interp.get_signature_runner(SIGNATURE)
    return runner(images=pixels)


def median_ms(interp, pixels: np.ndarray, repeats: int) -> float:  # noqa: ANN001
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], pixels)
    interp.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def radiographs(spec: InputSpec, count: int, offset: int) -> tuple[np.ndarray, list[str]]:
    """``count`` training radiographs spread over the classes, and their folder labels."""
    files = sorted(REAL_DATA.glob("*/Train/*.jpg"))
    if not files:
        sys.exit(f"no radiographs under {REAL_DATA}")
    step = max(1, len(files) // (2 * count))
    chosen = files[offset::step][:count]
    return np.stack([load_array(f.read_bytes(), spec) for f in chosen]), [
        f.parent.parent.name for f in chosen
    ]


def int8_model(version: Path, calibration: np.ndarray, cache: Path) -> bytes:
    """Full-integer static int8 copy of the version's SavedModel (cached by version)."""
    digest = hashlib.sha256((version / "model.tflite").read_bytes()).hexdigest()[:16]
    target = cache / f"{version.parent.name}-{digest}-int8.tflite"  # by content, not name
    if target.is_file():
        return target.read_bytes()
    import tensorflow as tf  # noqa: PLC0415

    converter = tf.lite.TFLiteConverter.from_saved_model(str(version), [SIGNATURE])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ({"images": x[np.newaxis]} for x in calibration)
    # int8 kernels for every op that has one; the rest (few, cheap) stay float.
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    content = converter.convert()
    cache.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    return content


def throughput(content: bytes, interpreters: int, threads: int, images: np.ndarray) -> float:
    """Images per second from 8 client threads sharing a pool of interpreters (the
    service's own :class:`service.runtime.RunnerPool`, through :func:`clients_rate`)."""
    from service.runtime import RunnerPool  # noqa: PLC0415

    pool = RunnerPool(None, [interpreter(content, threads) for _ in range(interpreters)])

    class Pooled:
        def run(self, pixels: np.ndarray) -> None:
            with pool.lend() as interp:
                interp.set_tensor(interp.get_input_details()[0]["index"], pixels)
                interp.invoke()

    return clients_rate(Pooled(), images)


def openvino_section(version: Path, check: np.ndarray, repeats: int) -> None:
    """The service's own predictors: LiteRT float32 against OpenVINO float32 and bf16."""
    from service.runtime import OpenVINOPredictor, TFLitePredictor  # noqa: PLC0415

    try:
        import openvino  # noqa: F401, PLC0415
    except ImportError:
        print(
            "\nopenvino: not installed (the service extra installs it: "
            "pip install 'bonefrac[service]'), skipped"
        )
        return
    tflite_file = version / "model.tflite"
    predictors = {
        "litert float32": TFLitePredictor(tflite_file, threads=2),
        "openvino float32": OpenVINOPredictor(tflite_file, threads=2),
        "openvino bf16": OpenVINOPredictor(tflite_file, threads=2, precision="bf16"),
    }
    if predictors["openvino bf16"].runtime != "openvino-bf16":
        print("\n(this CPU has no bf16: OpenVINO runs float32 for the bf16 row)")
    one = check[:1]
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for predictor in predictors.values():
        predictor.run(one)
    for _ in range(repeats):  # alternated, so a slow spell hits every runtime alike
        for name, predictor in predictors.items():
            start = time.perf_counter()
            predictor.run(one)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["litert float32"])
    print("\nthe service's runtimes, batch 1, 2 threads, alternated: median ms (ratio to litert)")
    for name, values in times.items():
        ms = statistics.median(values)
        print(f"  {name:17} {ms * 1000:7.1f}   x{base / ms:4.2f} faster")

    print("\nopenvino, CPU ms per image on one thread: the file's dynamic batch, and one image")
    for precision in ("f32", "bf16"):
        cells = []
        for shape in ("dynamic", "one image"):
            compiled = openvino_compiled(tflite_file, precision, fixed=shape == "one image")
            compiled.infer({0: one})
            start = time.process_time()
            for _ in range(repeats):
                compiled.infer({0: one})
            cells.append(f"{shape} {(time.process_time() - start) * 1000 / repeats:6.1f}")
        print(f"  {precision:5}" + "   ".join(cells))

    print("\n1 and 8 concurrent clients through the service's predictors, images/s")
    pools = {
        "litert 1 interpreter x 2 threads (the old default)": TFLitePredictor(
            tflite_file, interpreters=1, threads=2
        ),
        "litert 2 x 1 thread": TFLitePredictor(tflite_file, interpreters=2, threads=1),
        "litert 2 x 1 + solo 2 threads (without openvino)": TFLitePredictor(
            tflite_file, interpreters=2, threads=1, solo_threads=2
        ),
        "openvino f32 2 streams x 1 + solo 2 (the default)": OpenVINOPredictor(
            tflite_file, streams=2, threads=1, solo_threads=2
        ),
        "openvino bf16 2 streams x 1 + solo 2": OpenVINOPredictor(
            tflite_file, streams=2, threads=1, solo_threads=2, precision="bf16"
        ),
    }
    for name, predictor in pools.items():
        alone, loaded = clients_rate(predictor, check[:16], 1), clients_rate(predictor, check[:64])
        print(f"  {name:52} 1 client {alone:6.1f}   8 clients {loaded:6.1f}")

    reference = predictors["litert float32"]
    for name in ("openvino float32", "openvino bf16"):
        a = np.concatenate([reference.predict(x[np.newaxis]) for x in check])
        b = np.concatenate([predictors[name].predict(x[np.newaxis]) for x in check])
        print(
            f"  {name} against litert on {len(check)} radiographs: top-1 agreement "
            f"{np.mean(a.argmax(1) == b.argmax(1)):.3f}, largest |dp| "
            f"{np.abs(a - b).max():.4f} (accuracy: experiments/runtime_precision.py)"
        )


def openvino_compiled(tflite_file: Path, precision: str, *, fixed: bool) -> Any:
    """One infer request of ``model.tflite`` on OpenVINO on one thread, compiled with the
    file's dynamic batch or (``fixed``) for one image."""
    import openvino as ov  # noqa: PLC0415

    from service.runtime import fix_to_one_image  # noqa: PLC0415

    core = ov.Core()
    model = core.read_model(str(tflite_file))
    if fixed:
        fix_to_one_image(model)
    settings = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": 1}
    return core.compile_model(model, "CPU", settings).create_infer_request()


def clients_rate(predictor: Any, images: np.ndarray, clients: int = 8) -> float:
    """Images per second from ``clients`` threads calling ``predictor.run`` one image each."""
    per_client = max(2, len(images) // clients)
    predictor.run(images[:1])

    def client(index: int) -> None:
        for i in range(per_client):
            predictor.run(images[(index + i) % len(images)][np.newaxis])

    workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return clients * per_client / (time.perf_counter() - start)


def mirror_variants(spec: InputSpec) -> dict[str, bytes]:
    """The Lite2 feature extractor with and without the mirror average, as TFLite."""
    import tensorflow as tf  # noqa: PLC0415

    from trainer.backbones import feature_extractor  # noqa: PLC0415

    shape = (spec.height, spec.width, spec.channels)
    out = {}
    for mirror in (False, True):
        model = feature_extractor("efficientnet-lite2", shape, mirror=mirror)
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        with contextlib.redirect_stdout(io.StringIO()):  # Keras lists every captured tensor
            out["mirror" if mirror else "no mirror"] = converter.convert()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=REPO / "models")
    parser.add_argument("--calibrate", type=int, default=100, help="calibration radiographs")
    parser.add_argument("--check", type=int, default=200, help="radiographs compared")
    parser.add_argument("--repeats", type=int, default=20, help="timed invokes per figure")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bonefrac")
    parser.add_argument("--skip-mirror", action="store_true")
    parser.add_argument("--skip-int8", action="store_true", help="no int8 conversion")
    parser.add_argument("--skip-openvino", action="store_true")
    args = parser.parse_args()

    versions = sorted(
        (p for p in (args.models / "bone-fracture").glob("*") if p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    version = versions[-1]
    spec = InputSpec.from_dict(read_metadata(version)["input"])
    classes = read_metadata(version)["classes"]
    float32 = (version / "model.tflite").read_bytes()
    calibration, _ = radiographs(spec, args.calibrate, 0)
    check, labels = radiographs(spec, args.check, 1)  # interleaved, none in both
    print(f"model {version}; load {os.getloadavg()[0]:.1f} (2 cores, shared)\n")

    if not args.skip_openvino:
        openvino_section(version, check, args.repeats)
    if args.skip_int8:
        return
    print("\nlatency, batch 1, median ms per image")
    int8 = int8_model(version, calibration, args.cache)
    one = check[:1]
    for name, content in (("float32", float32), ("int8 static (QS8)", int8)):
        for threads in (1, 2):
            ms = median_ms(interpreter(content, threads), one, args.repeats)
            print(f"  {name:18} {threads} thread(s) {ms:7.1f}")

    print("\nint8 against float32 on radiographs not used for calibration")
    f_interp, q_interp = interpreter(float32, 2), interpreter(int8, 2)
    f_probs = np.concatenate([run(f_interp, x[np.newaxis])[contract.PROBABILITIES] for x in check])
    q_probs = np.concatenate([run(q_interp, x[np.newaxis])[contract.PROBABILITIES] for x in check])
    truth = np.array([classes.index(label) for label in labels])
    diff = np.abs(f_probs - q_probs)
    print(
        f"  {len(check)} images: top-1 agreement "
        f"{np.mean(f_probs.argmax(1) == q_probs.argmax(1)):.3f}, "
        f"largest |dp| {diff.max():.3f}, mean |dp| {diff.mean():.4f}; top-1 vs labels "
        f"float32 {np.mean(f_probs.argmax(1) == truth):.3f}, "
        f"int8 {np.mean(q_probs.argmax(1) == truth):.3f} (images the head was fitted on)"
    )

    print("\nbatching, 2 threads: ms per image in one invoke of a batch")
    for batch in (1, 2, 4, 8):
        pixels = np.repeat(one, batch, axis=0)
        for name, content in (("float32", float32), ("int8", int8)):
            ms = median_ms(interpreter(content, 2, batch), pixels, max(3, args.repeats // batch))
            print(f"  batch {batch}  {name:8} {ms / batch:7.1f}")

    print("\n8 concurrent clients, images/s")
    for name, content in (("float32", float32), ("int8", int8)):
        for interpreters, threads in ((1, 2), (2, 1)):
            rate = throughput(content, interpreters, threads, check[:64])
            print(f"  {name:8} {interpreters} interpreter(s) x {threads} thread(s) {rate:6.1f}")

    if not args.skip_mirror:
        print("\nmirror pass: the Lite2 feature extractor alone, float32, 2 threads, batch 1")
        try:
            variants = mirror_variants(spec)
        except Exception as exc:  # the trainer is optional here
            print(f"  skipped: {exc}")
        else:
            for name, content in variants.items():
                print(
                    f"  {name:10} {median_ms(interpreter(content, 2), one, args.repeats):7.1f} ms"
                )


if __name__ == "__main__":
    main()
