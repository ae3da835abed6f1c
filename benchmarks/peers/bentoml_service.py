"""BentoML (1.4, the ``@bentoml.service`` API) serving the shipped model.

Set up as BentoML's documentation advises for a CPU-bound model: one worker process
per core (``workers`` = ``PEER_WORKERS``, 2 here, each TFLite interpreter on one
thread) and adaptive batching (``batchable=True``, up to ``PEER_MAX_BATCH`` images,
BentoML's dispatcher choosing the wait). ``max_latency_ms`` is the traffic timeout
(60 s): BentoML answers 503 to a request its batcher expects to exceed it, and with
its 1 s example value 32 closed-loop clients on two busy cores got 503s. The image arrives
as a multipart file upload (``image``), as bonefrac's ``/predict`` takes it.

Run by ``run.py`` as ``bentoml serve bentoml_service:Bonefrac --host 127.0.0.1``;
ready at ``/readyz``.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

import bentoml
from peer_model import PeerModel, max_batch, workers


def answer_files(model: PeerModel, images: list[Path]) -> list[dict]:
    """One answer per uploaded file, decoded by modelio."""
    return model.predict_bytes([Path(image).read_bytes() for image in images])


@bentoml.service(workers=workers(), traffic={"timeout": 60})
class Bonefrac:
    def __init__(self) -> None:
        self.model = PeerModel()

    @bentoml.api(batchable=True, max_batch_size=max_batch(), max_latency_ms=60_000)
    def predict(self, image: list[Path]) -> list[dict]:
        return answer_files(self.model, image)
