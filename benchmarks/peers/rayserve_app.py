"""Ray Serve (2.x) serving the shipped model.

Set up as Ray Serve's documentation advises for a CPU model: ``num_replicas`` =
``PEER_WORKERS`` replicas (2 here, one CPU and one TFLite thread each) behind Serve's
HTTP proxy, and ``@serve.batch`` (``max_batch_size`` = ``PEER_MAX_BATCH``,
``batch_wait_timeout_s`` = ``PEER_BATCH_WAIT_MS``). The image arrives as a multipart
upload (``file``). Ray runs locally (``ray.init`` on this machine, dashboard off,
usage stats off with ``RAY_USAGE_STATS_ENABLED=0``); Serve's proxy binds 127.0.0.1.

Run by ``run.py`` as ``python rayserve_app.py``; ``GET /`` answers once the replicas
are up. SIGINT or SIGTERM shuts Serve and Ray down.
"""

from __future__ import annotations

import os
import signal
import threading

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from peer_model import PeerModel, batch_wait_ms, max_batch, port, workers
from ray import serve
from starlette.requests import Request


@serve.deployment(num_replicas=workers(), ray_actor_options={"num_cpus": 1})
class Bonefrac:
    def __init__(self) -> None:
        self.model = PeerModel()

    @serve.batch(max_batch_size=max_batch(), batch_wait_timeout_s=batch_wait_ms() / 1000)
    async def predict(self, blobs: list[bytes]) -> list[dict]:
        return self.model.predict_bytes(blobs)

    async def __call__(self, request: Request) -> dict:
        if request.method == "GET":
            return {"status": "ready"}
        form = await request.form()
        return await self.predict(await form["file"].read())


app = Bonefrac.bind()


def main() -> None:
    import ray  # noqa: PLC0415

    ray.init(
        num_cpus=max(2, workers()),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port()})
    serve.run(app, route_prefix="/")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
