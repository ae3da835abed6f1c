"""Clients that go away or dawdle: a disconnect mid-upload, a stalled body, slow headers;
each answered or cut off, logged in one line, and the service goes on."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from support.direct_calls import post_scope
from support.loopback import free_port, stop, wait_until_ok

from service.app import create_app

MODEL = "bone-fracture"
REPO = Path(__file__).resolve().parents[2]


def _call_asgi(app, path: str, headers: list, chunks: list[dict], sent: list[dict]) -> None:
    """Call the ASGI app directly: ``receive`` hands out ``chunks``, then waits forever."""
    scope = post_scope(path, headers)
    pending = list(chunks)

    async def receive() -> dict:
        if pending:
            return pending.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    async def main() -> None:
        with anyio.fail_after(60):  # a hang fails the test instead of blocking the suite
            await app(scope, receive, send)

    anyio.run(main)


def _count(app, route: str, status: str) -> float:
    return app.state.metrics.requests.labels(route, "POST", status)._value.get()


@pytest.mark.parametrize(
    ("path", "content_type", "first"),
    [
        (
            "/predict",
            b"multipart/form-data; boundary=XyZ",
            b"--XyZ\r\nContent-Disposition: "
            b'form-data; name="file"; filename="a.png"\r\n\r\n\x89PNG',
        ),
        (f"/v1/models/{MODEL}:predict", b"application/json", b'{"instances": [{"b64": "iVBO'),
    ],
    ids=["predict", "tf-serving"],
)
def test_client_disconnecting_mid_upload_is_a_499_logged_in_one_line(
    client, caplog, path, content_type, first
):
    app = client.app
    caplog.set_level(logging.INFO)
    sent: list[dict] = []
    chunks = [
        {"type": "http.request", "body": first, "more_body": True},
        {"type": "http.disconnect"},
    ]

    _call_asgi(app, path, [(b"content-type", content_type)], chunks, sent)

    route = path if path == "/predict" else "/v1/models/{name}:predict"
    assert _count(app, route, "499") == 1
    assert _count(app, route, "500") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    lines = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].exc_info is None


def test_a_body_that_stalls_is_answered_408_and_closed(make_settings, tiny_models_dir):
    app = create_app(make_settings(tiny_models_dir, body_timeout_s=0.2))
    app.state.registry.refresh()
    sent: list[dict] = []
    chunks = [
        {
            "type": "http.request",
            "body": b"--XyZ\r\nContent-Disposition: form-data; ",
            "more_body": True,
        },
    ]  # ...and then nothing more, ever

    _call_asgi(
        app, "/predict", [(b"content-type", b"multipart/form-data; boundary=XyZ")], chunks, sent
    )

    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    body = json.loads(
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    )
    assert body["error"]["code"] == "request_timeout"
    assert "BONEFRAC_BODY_TIMEOUT_S" in body["error"]["message"]


@pytest.fixture
def quick_header_service(tiny_models_dir, tmp_path):
    """``python -m service`` with a 1 s header deadline: (host, port)."""
    port = free_port()
    log = tmp_path / "service.log"
    env = {
        **os.environ,
        "BONEFRAC_MODELS_DIR": str(tiny_models_dir),
        "BONEFRAC_RELOAD_INTERVAL_S": "0",
        "BONEFRAC_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    }
    env.pop("BONEFRAC_API_KEY", None)
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/readyz", proc, log, 120)
        yield "127.0.0.1", port
    finally:
        stop(proc)


HEADER_TIMEOUT_S = 1.0


MARGIN_S = 30.0  # generous: only a server that never closes fails


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server closes the connection within the deadline plus the margin."""
    sock.settimeout(HEADER_TIMEOUT_S + MARGIN_S)
    try:
        while data := sock.recv(4096):
            assert not data, data
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.mark.e2e
def test_slow_headers_are_cut_off_after_the_header_timeout(quick_header_service):
    address = quick_header_service
    partial = socket.create_connection(address)
    partial.sendall(b"GET /healthz HTT")  # a request line never finished
    silent = socket.create_connection(address)  # connects and sends nothing
    keep_alive = socket.create_connection(address)
    keep_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    keep_alive.settimeout(30)
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        answer += keep_alive.recv(4096)
    assert b"200 OK" in answer
    keep_alive.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # a second request, stalled

    with partial, silent, keep_alive:
        assert _closed_by_server(partial)
        assert _closed_by_server(silent)
        assert _closed_by_server(keep_alive)
    with socket.create_connection(address) as prompt:  # a normal client is unaffected
        prompt.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        prompt.settimeout(30)
        assert prompt.recv(4096).startswith(b"HTTP/1.1 200")
