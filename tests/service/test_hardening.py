"""What a hostile client and a first-time user ran into (issue 12), one test per fix."""

from __future__ import annotations

import base64
import gc
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import anyio
import pytest
from support.direct_calls import post_scope, run_python
from support.loopback import free_port, stop, wait_until_ok
from support.sample_images import big_16bit_png, encode, upload
from test_errors import assert_error

import service.inference
import service.tfserving
from service.app import create_app

MODEL = "bone-fracture"
REPO = Path(__file__).resolve().parents[2]


def no_decoding(*_args, **_kwargs):
    raise AssertionError("an image was decoded; the request should have been refused first")


# --- 1. TF Serving instances are bounded ----------------------------------------------


def test_tf_serving_refuses_too_many_instances_before_decoding(serve, tiny_models_dir, monkeypatch):
    client = serve(tiny_models_dir, max_instances=4)
    b64 = base64.b64encode(encode("PNG", size=(8, 8))).decode()
    monkeypatch.setattr(service.tfserving, "decode_array", no_decoding)

    error = assert_error(
        client.post(f"/v1/models/{MODEL}:predict", json={"instances": [{"b64": b64}] * 5}),
        413,
        "too_many_instances",
    )
    assert "BONEFRAC_MAX_INSTANCES" in error["message"]
    columnar = {"inputs": {"image_bytes": [{"b64": b64}] * 5}}
    assert_error(
        client.post(f"/v1/models/{MODEL}/versions/1:predict", json=columnar),
        413,
        "too_many_instances",
    )
    monkeypatch.undo()
    ok = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [{"b64": b64}] * 4})
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["predictions"]) == 4


# --- 2. Decoding is bounded by its cost, not only the pixel count ---------------------


@pytest.fixture(scope="module")
def big_16bit() -> bytes:
    data = big_16bit_png(6320)
    assert len(data) < 200_000  # a small file...
    return data  # ...whose 40 million 16-bit pixels are within BONEFRAC_MAX_PIXELS


def test_a_small_file_with_a_huge_16bit_canvas_is_refused_before_decoding(
    client, big_16bit, monkeypatch
):
    assert client.app.state.settings.max_pixels >= 6320 * 6320
    monkeypatch.setattr(service.inference, "decode", no_decoding)
    monkeypatch.setattr(service.inference, "load_array", no_decoding)

    error = assert_error(client.post("/predict", files=upload(big_16bit)), 413, "image_too_large")
    assert "BONEFRAC_MAX_DECODE_BYTES" in error["message"]
    assert "6320x6320" in error["message"]
    batch = client.post("/predict/batch", files=upload(big_16bit, field="files")).json()
    assert batch["results"][0]["error"]["code"] == "image_too_large"
    body = {"instances": [{"b64": base64.b64encode(big_16bit).decode()}]}
    assert_error(client.post(f"/v1/models/{MODEL}:predict", json=body), 413, "image_too_large")


def test_decode_budget_is_a_setting_and_ordinary_16bit_images_pass(serve, tiny_models_dir):
    small = encode("PNG", "I;16", size=(300, 200))
    client = serve(tiny_models_dir, max_decode_bytes=300 * 200 * 28)
    assert client.post("/predict", files=upload(small)).status_code == 200
    tight = serve(tiny_models_dir, max_decode_bytes=300 * 200 * 28 - 1)
    assert_error(tight.post("/predict", files=upload(small)), 413, "image_too_large")
    # the same canvas in 8-bit gray costs far less and passes the same budget
    gray = encode("PNG", "L", size=(300, 200))
    assert tight.post("/predict", files=upload(gray)).status_code == 200
    # JPEGs skip the header parse only while the pixel cap alone keeps them in budget
    tiny_budget = serve(tiny_models_dir, max_decode_bytes=1000)
    jpeg = encode("JPEG", "L", size=(300, 200))
    assert_error(tiny_budget.post("/predict", files=upload(jpeg)), 413, "image_too_large")
    assert client.post("/predict", files=upload(jpeg)).status_code == 200


# --- 3. The default runtime never imports TensorFlow ---------------------------------


def test_version_without_tflite_is_refused_and_tensorflow_never_imported(models_copy):
    """Nor the trainer: the service reads images and model folders through modelio only."""
    (models_copy / MODEL / "1" / "model.tflite").unlink()
    script = textwrap.dedent(
        f"""
        import sys, warnings
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
        from service.app import create_app
        from service.settings import Settings

        app = create_app(Settings(models_dir={str(models_copy)!r}, reload_interval_s=0))
        with TestClient(app) as client:
            ready = client.get("/readyz")
            models = client.get("/models").json()
        assert ready.status_code == 503, ready.text
        [version] = models["versions"]
        assert version["state"] == "refused", version
        assert "BONEFRAC_RUNTIME" in version["reason"], version
        loaded = sorted(
            m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "trainer")
        )
        assert not loaded, loaded
        print("OK", version["reason"])
        """
    )
    result = run_python(script, env={"PATH": "/usr/bin:/bin", "HOME": str(models_copy)})

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.startswith("OK ")


def test_saved_model_runtime_is_used_only_when_asked(serve, models_copy):
    pytest.importorskip("tensorflow")
    (models_copy / MODEL / "1" / "model.tflite").unlink()
    client = serve(models_copy, runtime="auto")
    assert client.get("/models").json()["served"]["runtime"] == "saved_model"


# --- 5. No absolute path of the serving machine in any answer ------------------------


def test_no_answer_shows_an_absolute_path(serve, models_copy, tmp_path):
    version = models_copy / MODEL / "1"
    metadata = json.loads((version / "metadata.json").read_text())
    metadata["dataset"] = {**metadata.get("dataset", {}), "source": str(tmp_path / "secret-data")}
    (version / "metadata.json").write_text(json.dumps(metadata))
    broken = models_copy / MODEL / "2"
    shutil.copytree(version, broken)
    (broken / "model.tflite").write_bytes(b"not a flat buffer")
    client = serve(models_copy)
    empty = serve(tmp_path / "empty")

    answers = [
        client.get("/models"),
        client.get("/classes"),
        client.get(f"/v1/models/{MODEL}"),
        empty.get("/readyz"),
        empty.get("/models"),
        empty.post("/predict", files=upload(encode())),
    ]

    for answer in answers:
        assert str(tmp_path) not in answer.text, answer.text
        assert str(tmp_path.resolve()) not in answer.text, answer.text
    body = answers[0].json()
    assert body["models_dir"] == "models"
    assert body["served"]["path"] == f"models/{MODEL}/1"
    assert body["served"]["metadata"]["dataset"]["source"] == "secret-data"
    refused = next(v for v in body["versions"] if v["state"] == "refused")
    assert f"models/{MODEL}/2/model.tflite" in refused["reason"]


# --- 8. Deleting every version unloads the model --------------------------------------


def test_deleting_every_version_unloads_the_model(serve, models_copy):
    client = serve(models_copy)
    assert client.get("/readyz").status_code == 200

    shutil.rmtree(models_copy / MODEL / "1")
    client.app.state.registry.refresh()

    assert_error(client.get("/readyz"), 503, "model_unavailable")
    assert_error(client.post("/predict", files=upload(encode())), 503, "model_unavailable")
    assert client.get("/models").json() | {"pinned_version": None} == {
        "name": MODEL,
        "models_dir": "models",
        "pinned_version": None,
        "served": None,
        "versions": [],
    }
    assert client.get("/healthz").status_code == 200


def test_deleting_the_served_version_falls_back_to_an_older_one(serve, models_copy):
    shutil.copytree(models_copy / MODEL / "1", models_copy / MODEL / "2")
    client = serve(models_copy)
    assert client.get("/readyz").json()["version"] == 2

    shutil.rmtree(models_copy / MODEL / "2")
    client.app.state.registry.refresh()

    assert client.get("/readyz").json()["version"] == 1


# --- 4. A client that disconnects mid-upload is a 499, not a 500 ----------------------


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


# --- 7. Slow clients: a deadline for the headers, a pause limit for the body ----------


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


# --- 9. /docs and /redoc need no internet ---------------------------------------------


@pytest.mark.parametrize(
    ("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]
)
def test_docs_pages_load_their_scripts_from_the_service(client, page, script):
    html = client.get(page).text

    external = re.findall(r"""(?:src|href)=["']?(https?:)?//""", html)
    assert not external, html
    assert "fonts.googleapis" not in html
    assert f"/docs-static/{script}" in html
    asset = client.get(f"/docs-static/{script}")
    assert asset.status_code == 200
    assert len(asset.content) > 100_000


# --- 14. The real-data tests find the dataset where BONEFRAC_TEST_DATA says -----------


def test_real_data_location_comes_from_the_environment(tmp_path):
    script = "import sys; sys.path.insert(0, 'tests'); import conftest; print(conftest.REAL_DATA)"
    env = {**os.environ, "BONEFRAC_TEST_DATA": str(tmp_path / "my data")}
    result = run_python(script, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(tmp_path / "my data")


# --- Flat memory across swaps: a replaced or deleted version is freed -------------------


def test_a_replaced_version_is_freed_once_no_request_holds_it(serve, models_copy):
    client = serve(models_copy)
    registry = client.app.state.registry
    assert client.post("/predict", files=upload(encode())).status_code == 200
    first = weakref.ref(registry.current)
    for version in (2, 3):
        shutil.copytree(models_copy / MODEL / "1", models_copy / MODEL / str(version))
        registry.refresh()
        assert client.post("/predict", files=upload(encode())).json()["version"] == version
    shutil.rmtree(models_copy / MODEL / "1")
    registry.refresh()
    gc.collect()

    assert first() is None  # no interpreter of version 1 is kept alive
