"""The model every peer serves: the shipped ``model.tflite`` and bonefrac's own decoding.

Each peer's service module imports this file and nothing else of the product but
:mod:`modelio` (put on ``sys.path`` from the checkout, not installed). It runs the TFLite
file as the service's runtime does (ai-edge-litert, the ``serving_default`` signature,
one image per invoke on batch-1 buffers) and decodes with
:func:`modelio.images.load_array`, so a peer differs from bonefrac only in the serving
stack around the same two calls.

Settings come from the environment the benchmark (``run.py``) gives each server:

``PEER_MODEL_DIR``   the version folder (``models/bone-fracture/<N>``)
``PEER_THREADS``     TFLite threads per interpreter (default 1)
``PEER_WORKERS``     processes or replicas the peer runs (default 1)
``PEER_MAX_BATCH``   largest batch the peer's batcher forms (default 8)
``PEER_BATCH_WAIT_MS`` how long a batcher waits to fill a batch (default 2 ms)
``PEER_PORT``        the loopback port to listen on
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from modelio.images import InputSpec, load_array  # noqa: E402

MODEL_NAME = "bonefrac"  # the name a peer registers the model under (its URL path)
SIGNATURE = "serving_default"


def setting(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def port() -> int:
    return setting("PEER_PORT", 8000)


def workers() -> int:
    return setting("PEER_WORKERS", 1)


def max_batch() -> int:
    return setting("PEER_MAX_BATCH", 8)


def batch_wait_ms() -> float:
    return float(os.environ.get("PEER_BATCH_WAIT_MS", "2"))


class PeerModel:
    """``model.tflite`` of one version folder, with its input size and class names."""

    def __init__(self, version_dir: str | Path | None = None, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

        folder = Path(version_dir or os.environ["PEER_MODEL_DIR"])
        metadata = json.loads((folder / "metadata.json").read_text())
        self.spec = InputSpec.from_dict(metadata["input"])
        self.classes: list[str] = list(metadata["classes"])
        interpreter = Interpreter(
            model_path=str(folder / "model.tflite"),
            num_threads=threads or setting("PEER_THREADS", 1),
        )
        self._runner = interpreter.get_signature_runner(SIGNATURE)

    def pixels(self, data: bytes) -> np.ndarray:
        """Encoded bytes to the model's ``(H, W, C)`` float32 input (modelio's decode)."""
        return load_array(data, self.spec)

    def infer(self, batch: np.ndarray) -> list[dict]:
        """One answer per image of ``(N, H, W, C)``; one invoke per image, as the service."""
        answers = []
        for i in range(len(batch)):
            out = self._runner(images=batch[i : i + 1])
            probabilities = np.asarray(out["probabilities"][0], dtype=np.float64)
            top = int(np.argmax(probabilities))
            answer = {
                "label": self.classes[top],
                "confidence": float(probabilities[top]),
                "probabilities": [round(float(p), 6) for p in probabilities],
            }
            if "ood_score" in out:
                answer["ood_score"] = float(np.asarray(out["ood_score"]).reshape(-1)[0])
            answers.append(answer)
        return answers

    def predict_bytes(self, blobs: list[bytes]) -> list[dict]:
        """Decode then infer, one answer per encoded image."""
        return self.infer(np.stack([self.pixels(b) for b in blobs]))
