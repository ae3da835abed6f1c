"""Requests a probe tried as an attacker (issue 18) that are about HTTP, not pixels.

Each test reproduces one finding and fails without its fix: an over-long multipart
boundary (a 500 with a traceback before), ``HEAD`` on the probes (405 before) and a body
that trickles in under the pause limit forever.
"""

from __future__ import annotations

import logging

import pytest
from sample_images import encode
from test_errors import assert_error

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
