"""LitServe (0.2) serving the shipped model.

Set up as LitServe's documentation advises for CPU: ``accelerator="cpu"`` with
``workers_per_device`` = ``PEER_WORKERS`` (2 here, each TFLite interpreter on one
thread) and its dynamic batching (``max_batch_size`` = ``PEER_MAX_BATCH``,
``batch_timeout`` = ``PEER_BATCH_WAIT_MS``). The image arrives as a multipart upload
(``file``; LitServe needs python-multipart for it); decoding runs in
``decode_request``, in the worker processes.

Run by ``run.py`` as ``python litserve_server.py``; ready at ``/health``. LitServe's
workers outlive a SIGTERM of the main process, so ``run.py`` stops its whole process
group with SIGINT.
"""

import litserve as ls
import numpy as np
from peer_model import PeerModel, batch_wait_ms, max_batch, port, workers


class BonefracAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = PeerModel()

    # No annotation on ``request``: LitServe then hands over the parsed form (a typed
    # parameter would make it a JSON body).
    def decode_request(self, request) -> np.ndarray:  # noqa: ANN001
        upload = request["file"]
        data = upload.file.read() if hasattr(upload, "file") else bytes(upload)
        return self.model.pixels(data)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> list[dict]:
        return self.model.infer(x if x.ndim == 4 else x[np.newaxis])

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: list[dict] | dict) -> dict:
        return output[0] if isinstance(output, list) else output


def main() -> None:
    api = BonefracAPI(max_batch_size=max_batch(), batch_timeout=batch_wait_ms() / 1000)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=workers())
    server.run(host="127.0.0.1", port=port(), generate_client_file=False)


if __name__ == "__main__":
    main()
