"""Requests a probe tried as an attacker (issue 18) that are about HTTP, not pixels.

Each test reproduces one finding and fails without its fix: an over-long multipart
boundary (a 500 with a traceback before), ``HEAD`` on the probes (405 before) and a body
that trickles in under the pause limit forever.
"""

from __future__ import annotations

import json
import logging

import anyio
import pytest
from support.direct_calls import post_scope
from support.sample_images import encode
from test_errors import assert_error

from service.app import create_app

MAX_BOUNDARY = 70  # RFC 2046


def _one_part_body(boundary: str, data: bytes) -> bytes:
    return (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="a.png"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


@pytest.mark.parametrize("length", [MAX_BOUNDARY + 1, 300])
def test_an_overlong_multipart_boundary_is_a_400_without_traceback(client, caplog, length):
    boundary = "B" * length
    caplog.set_level(logging.INFO)

    response = client.post(
        "/predict",
        content=_one_part_body(boundary, encode("PNG")),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )

    error = assert_error(response, 400, "invalid_multipart")
    assert "boundary" in error["message"]
    assert "70" in error["message"]
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_boundary_of_70_characters_is_accepted(client):
    boundary = "B" * MAX_BOUNDARY
    response = client.post(
        "/predict",
        content=_one_part_body(boundary, encode("PNG")),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_head_on_a_probe_answers_like_get_without_a_body(client, path):
    got = client.get(path)
    head = client.head(path)

    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == got.headers["content-length"]
    assert f'method="HEAD",route="{path}",status="200"' in client.get("/metrics").text


def test_head_on_readyz_without_a_model_is_503_without_a_body(serve, tmp_path):
    client = serve(tmp_path)
    assert client.head("/readyz").status_code == client.get("/readyz").status_code == 503
    assert client.head("/readyz").content == b""


def test_head_elsewhere_is_still_refused(client):
    assert client.head("/classes").status_code == 405


def test_a_body_trickling_in_under_the_pause_limit_is_cut_off_at_the_deadline(
    make_settings, tiny_models_dir
):
    """One byte every 20 ms never pauses 5 s, but the whole body may take only 0.3 s."""
    app = create_app(make_settings(tiny_models_dir, body_timeout_s=5, body_deadline_s=0.3))
    app.state.registry.refresh()
    scope = post_scope("/predict", [(b"content-type", b"multipart/form-data; boundary=XyZ")])
    sent: list[dict] = []
    head = [b'--XyZ\r\nContent-Disposition: form-data; name="file"\r\n\r\n']

    async def receive() -> dict:
        await anyio.sleep(0.02)
        chunk = head.pop() if head else b"x"  # the part's data, a byte at a time
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    async def main() -> None:
        with anyio.fail_after(60):  # without the deadline the trickle never ends
            await app(scope, receive, send)

    anyio.run(main)

    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    body = json.loads(
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    )
    assert body["error"]["code"] == "request_timeout"
    assert "BONEFRAC_BODY_DEADLINE_S" in body["error"]["message"]
