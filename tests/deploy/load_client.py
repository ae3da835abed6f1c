"""A small load client that retries the way docs/deployment.md tells clients to.

Run inside a container on the Compose network (standard library only, so any of the
project's images can run it): ``python load_client.py URL IMAGE REQUESTS CONCURRENCY``.
Every request opens a new connection to an address of the service name picked at random
(see :func:`connect`), so requests spread over the replicas. A request that fails to
connect, is cut off, or gets 502, 503 or 504 is retried after a short pause (``/predict``
is stateless, so a retry is safe); any other answer is final. One JSON line per request
goes to stdout as it ends, so the caller can act mid-load (stop a replica), and a summary
line comes last.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

RETRYABLE_STATUS = {502, 503, 504}
ATTEMPTS = 8
BACKOFF_S = 0.25
CONNECT_TIMEOUT_S = 3.0
TIMEOUT_S = 30.0


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    """A ``file`` form field holding ``data``, and its content type."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return (
        head + data + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def connect(host: str, port: int) -> http.client.HTTPConnection:
    """A connection to one of the name's addresses, tried in random order.

    The name resolves to every replica, but in a fixed order, and the C library's
    address sorting keeps it fixed: a plain client always takes the first and one
    replica gets every request (measured under podman: 40 of 40). Shuffling spreads new
    connections; trying the rest covers a replica that has just gone away.
    """
    addresses = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    random.shuffle(addresses)
    error: OSError = OSError(f"{host} has no address")
    for address in addresses:
        connection = http.client.HTTPConnection(address, port, timeout=CONNECT_TIMEOUT_S)
        try:
            connection.connect()
        except OSError as exc:
            error = exc
            connection.close()
            continue
        connection.sock.settimeout(TIMEOUT_S)
        return connection
    raise error


def post_once(host: str, port: int, body: bytes, content_type: str) -> tuple[int, str, bytes]:
    """One POST /predict on a fresh connection: (status, replica header, body)."""
    connection = connect(host, port)
    try:
        headers = {"Content-Type": content_type, "Host": f"{host}:{port}"}
        connection.request("POST", "/predict", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("X-Bonefrac-Replica", ""), response.read()
    finally:
        connection.close()


def predict(host: str, port: int, body: bytes, content_type: str) -> dict[str, object]:
    """POST with retries; the outcome of the last attempt and how many were made."""
    error = ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            status, replica, payload = post_once(host, port, body, content_type)
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            if status not in RETRYABLE_STATUS:
                label = json.loads(payload).get("label") if status == 200 else None
                return {"status": status, "replica": replica, "label": label, "attempts": attempt}
            error = f"HTTP {status}"
        time.sleep(BACKOFF_S * attempt)
    return {"status": None, "replica": "", "error": error, "attempts": ATTEMPTS}


def main(argv: list[str]) -> int:
    url, image_path, total, concurrency = argv[0], argv[1], int(argv[2]), int(argv[3])
    parts = urlsplit(url)
    host, port = parts.hostname or "service", parts.port or 80
    with open(image_path, "rb") as handle:  # noqa: PTH123 (the stdlib only, Python 3.11)
        body, content_type = multipart(image_path.rsplit("/", 1)[-1], handle.read())
    lock = threading.Lock()
    counter = iter(range(total))
    results: list[dict[str, object]] = []
    start = time.monotonic()

    def worker() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            outcome = {"index": index, **predict(host, port, body, content_type)}
            with lock:
                results.append(outcome)
                print(json.dumps(outcome), flush=True)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    summary = {
        "summary": True,
        "requests": total,
        "ok": sum(1 for r in results if r["status"] == 200),
        "failed": sum(1 for r in results if r["status"] != 200),
        "retried": sum(1 for r in results if int(r["attempts"]) > 1),  # type: ignore[call-overload]
        "replicas": dict(Counter(str(r["replica"]) for r in results if r["status"] == 200)),
        "seconds": round(elapsed, 3),
        "per_second": round(total / elapsed, 3) if elapsed > 0 else None,
    }
    print(json.dumps(summary), flush=True)
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
