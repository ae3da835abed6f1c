"""PyTriton (0.7: Triton Inference Server's own HTTP server and dynamic batcher, with
the model in Python) serving the shipped model.

KServe's v2 protocol with Triton's binary-data extension: ``POST
/v2/models/bonefrac/infer``, a JSON header then the encoded image as a ``BYTES`` tensor
of shape ``[1, 1]``. Set up as PyTriton's documentation advises for throughput on CPU:
``@batch`` with Triton's dynamic batcher (``max_batch_size`` = ``PEER_MAX_BATCH``,
queue delay ``PEER_BATCH_WAIT_MS``) and ``PEER_WORKERS`` model instances (a list of
inference callables, 2 here, each TFLite interpreter on one thread). HTTP binds
127.0.0.1; gRPC and metrics are bound to loopback too.

PyTriton's Python backend stub needs ``LD_LIBRARY_PATH`` to hold this interpreter's
``LIBDIR`` (``run.py`` sets it), glibc 2.35+ and numpy<2. Ready when
``/v2/models/bonefrac/ready`` answers 200 (the server's health route answers earlier).
"""

from __future__ import annotations

import os

import numpy as np
from peer_model import MODEL_NAME, PeerModel, batch_wait_ms, max_batch, port, workers
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def make_infer(model: PeerModel):  # noqa: ANN201 - a PyTriton inference callable
    """One model instance: a batch of encoded images (``BYTES [N, 1]``) to probabilities."""

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        pixels = np.stack([model.pixels(bytes(row[0])) for row in image])
        answers = model.infer(pixels)
        probabilities = np.array([a["probabilities"] for a in answers], dtype=np.float32)
        return {"probabilities": probabilities}

    return infer


def main() -> None:
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=port(),
        grpc_address="127.0.0.1",
        grpc_port=int(os.environ.get("PEER_GRPC_PORT", port() + 1)),
        metrics_port=int(os.environ.get("PEER_METRICS_PORT", port() + 2)),
        allow_metrics=False,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=[make_infer(PeerModel()) for _ in range(workers())],
            inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(-1,))],
            config=ModelConfig(
                max_batch_size=max_batch(),
                batcher=DynamicBatcher(max_queue_delay_microseconds=int(batch_wait_ms() * 1000)),
            ),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
