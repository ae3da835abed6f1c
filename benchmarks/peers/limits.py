"""What the CPU could do at most: the model's arithmetic per image and the machine's peak.

- :func:`model_macs` counts the multiply-accumulates of one image through a TFLite file
  from its operators' tensor shapes (convolutions, depthwise convolutions, fully
  connected layers: everything else is a rounding error beside them).
- :func:`peak_gflops` times large matrix products on the same cores, the best a dense
  kernel gets: float32 through numpy's BLAS and through TFLite's XNNPACK (the runtime
  the peers run the model on), and int8 through XNNPACK's QS8 kernels (a fully connected layer
  quantised to int8 by TensorFlow's converter; needs TensorFlow, so only in the
  project's own environment); float32 and bf16 through OpenVINO (the service's
  default runtime; bf16 runs on AMX tiles on CPUs that have them).

Run alone: ``.venv/bin/python benchmarks/peers/limits.py MODEL.tflite``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

#: One operand of the matrix products (square): big enough to run at the kernels' peak,
#: small enough to take about a second.
MATRIX = 2048


def model_macs(tflite_path: Path) -> dict[str, float]:
    """Multiply-accumulates of one batch-1 inference, by operator kind, and in total."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    shapes = {
        t["index"]: tuple(int(d) for d in t["shape"]) for t in interpreter.get_tensor_details()
    }
    counts: dict[str, float] = {}
    for op in interpreter._get_ops_details():
        kind = op["op_name"]
        ins, outs = list(op["inputs"]), list(op["outputs"])
        if kind not in {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} or len(ins) < 2:
            continue
        out, weights = shapes.get(outs[0]), shapes.get(ins[1])
        if not out or not weights:
            continue
        if kind == "CONV_2D":  # weights (out_c, kh, kw, in_c)
            macs = np.prod(out) * np.prod(weights[1:])
        elif kind == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, out_c)
            macs = np.prod(out) * weights[1] * weights[2]
        else:  # weights (out_units, in_units)
            macs = np.prod(out) * weights[1]
        counts[kind] = counts.get(kind, 0.0) + float(macs)
    counts["total"] = sum(counts.values())
    return counts


def _best_seconds(run: callable, repeats: int) -> float:  # type: ignore[valid-type]
    run()  # warm-up (threads, caches, packing)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def numpy_float32_gflops(n: int = MATRIX, repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    return 2 * n**3 / _best_seconds(lambda: a @ b, repeats) / 1e9


def _dense_tflite(n: int, int8: bool) -> bytes:
    """A TFLite file holding one ``n x n`` fully connected layer (int8: full-integer)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf  # noqa: PLC0415

    rng = np.random.default_rng(0)
    kernel = tf.constant((rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec((n, n), tf.float32)])
    def dense(x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, kernel)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [dense.get_concrete_function()], dense
    )
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.standard_normal((n, n)).astype(np.float32)] for _ in range(4)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def tflite_gflops(n: int = MATRIX, *, int8: bool, threads: int, repeats: int = 5) -> float:
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    interpreter = Interpreter(model_content=_dense_tflite(n, int8), num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    dtype = np.int8 if int8 else np.float32
    data = np.random.default_rng(2).integers(-100, 100, (n, n)).astype(dtype)
    interpreter.set_tensor(detail["index"], data)
    return 2 * n**3 / _best_seconds(interpreter.invoke, repeats) / 1e9


def openvino_gflops(n: int = MATRIX, *, precision: str, threads: int, repeats: int = 5) -> float:
    """One ``n x n`` matrix product on OpenVINO's CPU plugin (bf16: AMX where present)."""
    import openvino as ov  # noqa: PLC0415
    from openvino import opset13 as ops  # noqa: PLC0415

    rng = np.random.default_rng(0)
    x = ops.parameter([n, n], np.float32)
    kernel = ops.constant((rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32))
    model = ov.Model([ops.matmul(x, kernel, False, False)], [x])
    compiled = ov.Core().compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads}
    )
    request = compiled.create_infer_request()
    data = rng.standard_normal((n, n)).astype(np.float32)
    request.infer({0: data})
    return 2 * n**3 / _best_seconds(lambda: request.infer({0: data}), repeats) / 1e9


def peak_gflops(threads: int) -> dict[str, float | None]:
    """The peaks; the TFLite ones are None without TensorFlow (a peer venv), the
    OpenVINO ones without OpenVINO."""
    peaks: dict[str, float | None] = {"numpy_float32": numpy_float32_gflops()}
    try:
        peaks["xnnpack_float32"] = tflite_gflops(int8=False, threads=threads)
        peaks["xnnpack_int8"] = tflite_gflops(int8=True, threads=threads)
    except ImportError:
        peaks["xnnpack_float32"] = peaks["xnnpack_int8"] = None
    try:
        peaks["openvino_float32"] = openvino_gflops(precision="f32", threads=threads)
        peaks["openvino_bf16"] = openvino_gflops(precision="bf16", threads=threads)
    except ImportError:
        peaks["openvino_float32"] = peaks["openvino_bf16"] = None
    return peaks


def main() -> None:
    path = Path(sys.argv[1])
    macs = model_macs(path)
    print({k: f"{v / 1e9:.2f} GMAC" for k, v in macs.items()})
    threads = len(os.sched_getaffinity(0))
    print({k: (f"{v:.0f} GOP/s" if v else None) for k, v in peak_gflops(threads).items()})


if __name__ == "__main__":
    main()
