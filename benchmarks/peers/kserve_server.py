"""KServe's Python model server (``kserve.ModelServer``, 0.21) serving the shipped model.

KServe's v1 protocol, the TF Serving-style body: ``POST /v1/models/bonefrac:predict``
with ``{"instances": [{"image_bytes": {"b64": "..."}}]}`` (KServe takes images only as
base64 in JSON). Set up as KServe's documentation advises for a CPU predictor: the
model loaded in ``load()`` (once per worker: KServe spawns them), ``workers`` =
``PEER_WORKERS`` uvicorn processes (2 here, each TFLite interpreter on one thread),
gRPC off. KServe's Python server has no
request batcher of its own (batching is the Kubernetes agent sidecar's job), so none.

KServe 0.21 has no bind-address setting: its REST server hard-codes ``0.0.0.0``. This
script wraps the ``uvicorn.Config`` that server builds so that it binds 127.0.0.1
instead (nothing else changes). Ready when ``GET /v1/models/bonefrac`` says
``"ready": true``.
"""

from __future__ import annotations

import base64
from typing import Any

import kserve
import kserve.protocol.rest.server as rest_server
import uvicorn
from peer_model import MODEL_NAME, PeerModel, port, workers


def _loopback_config(*args: Any, **kwargs: Any) -> uvicorn.Config:
    kwargs["host"] = "127.0.0.1"
    return uvicorn.Config(*args, **kwargs)


class _LoopbackUvicorn:
    """``uvicorn`` as KServe's REST server sees it, but binding loopback only."""

    Config = staticmethod(_loopback_config)

    def __getattr__(self, name: str) -> Any:
        return getattr(uvicorn, name)


rest_server.uvicorn = _LoopbackUvicorn()


def decode_instances(payload: dict) -> list[bytes]:
    """The encoded images of a v1 body: ``{"image_bytes": {"b64": ...}}`` or ``{"b64": ...}``."""
    blobs = []
    for instance in payload["instances"]:
        inner = instance.get("image_bytes", instance)
        blobs.append(base64.b64decode(inner["b64"]))
    return blobs


class BonefracModel(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model: PeerModel | None = None
        self.ready = False

    def load(self) -> bool:
        self.model = PeerModel()
        self.ready = True
        return self.ready

    # KServe starts its workers with multiprocessing's spawn and pickles the registered
    # model into each: the TFLite interpreter is not picklable, so each worker loads its
    # own.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "model": None, "ready": False}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.load()

    def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        return {"predictions": self.model.predict_bytes(decode_instances(payload))}


def main() -> None:
    model = BonefracModel(MODEL_NAME)
    model.load()
    server = kserve.ModelServer(http_port=port(), workers=workers(), enable_grpc=False)
    server.start([model])


if __name__ == "__main__":
    main()
