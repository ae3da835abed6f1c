"""Bad input, missing models and auth: one error format, no traceback, still serving."""

from __future__ import annotations

import io

import anyio
import pytest
from PIL import Image
from support.direct_calls import post_scope
from support.sample_images import bomb_png, encode, upload, zip_bytes

from service.app import create_app
from service.settings import Settings

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def assert_error(response, status: int, code: str) -> dict:
    """The one error shape, the expected status, and nothing that looks like a traceback."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in response.text
    return body["error"]


@pytest.fixture
def still_serving(client, png):
    """After the test's bad request, a good one must still be answered."""
    yield client
    assert client.post("/predict", files=upload(png)).status_code == 200


@pytest.mark.parametrize(
    ("data", "filename"),
    [(b"hello, this is text\n", "notes.txt"), (PDF, "scan.pdf"), (zip_bytes(), "images.zip")],
)
def test_non_images_get_415_naming_the_accepted_types(still_serving, data, filename):
    error = assert_error(
        still_serving.post("/predict", files=upload(data, filename)), 415, "unsupported_media_type"
    )
    assert "image/jpeg" in error["message"]
    assert "image/webp" in error["message"]


def test_gif_is_not_accepted(still_serving):
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="GIF")
    assert_error(
        still_serving.post("/predict", files=upload(buffer.getvalue(), "a.gif")),
        415,
        "unsupported_media_type",
    )


def test_empty_file_is_400(still_serving):
    assert_error(still_serving.post("/predict", files=upload(b"")), 400, "empty_file")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_image_is_422(still_serving, fmt):
    data = encode(fmt, "L", size=(200, 200))
    truncated = data[: len(data) // 2]
    assert_error(still_serving.post("/predict", files=upload(truncated)), 422, "invalid_image")


def test_corrupt_pixel_data_is_422(still_serving):
    data = bytearray(encode("PNG", size=(200, 200)))
    start = data.index(b"IDAT") + 8
    data[start : start + 200] = b"\x5a" * 200  # garbage in the compressed pixels

    assert_error(still_serving.post("/predict", files=upload(bytes(data))), 422, "invalid_image")


def test_decompression_bomb_is_refused_from_its_header(still_serving, monkeypatch):
    """Refused before a single pixel is decoded (what made it quick): Pillow's ``load`` is
    where pixels are decompressed, and it never sees the bomb."""
    bomb = bomb_png(30_000)  # 900 million pixels in a few hundred bytes
    assert len(bomb) < 10_000
    decoded: list[tuple[int, int]] = []
    load = Image.Image.load

    def watched_load(image: Image.Image) -> object:
        decoded.append(image.size)
        return load(image)

    monkeypatch.setattr(Image.Image, "load", watched_load)
    response = still_serving.post("/predict", files=upload(bomb))

    assert_error(response, 413, "image_too_large")
    assert (30_000, 30_000) not in decoded


@pytest.mark.parametrize(
    "files",
    [
        {"image": ("x.png", encode(), "image/png")},  # wrong field name
        None,  # no form at all
    ],
)
def test_wrong_or_missing_form_field_is_422(still_serving, files):
    response = still_serving.post("/predict", files=files, data=None if files else {"x": "1"})
    error = assert_error(response, 422, "validation_error")
    assert "file" in error["message"]


def test_image_posted_as_the_raw_body_is_422_saying_to_use_a_form(still_serving, png):
    response = still_serving.post("/predict", content=png, headers={"Content-Type": "image/png"})
    error = assert_error(response, 422, "validation_error")
    assert "multipart/form-data field 'file'" in error["message"]


_PART = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'


@pytest.mark.parametrize(
    "body",
    [
        b"this is not a multipart body",
        _PART + b"\x89PNG...",  # ends before the closing boundary
        b"--XyZ\r\nnot a header line\r\n\r\nabc\r\n--XyZ--\r\n",
        b"--XyZ\r\nX-Long: " + b"x" * 20_000 + b"\r\n\r\nabc\r\n--XyZ--\r\n",
    ],
    ids=["garbage", "truncated", "bad-header", "huge-header"],
)
def test_malformed_multipart_body_is_400(still_serving, body):
    headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    response = still_serving.post("/predict", content=body, headers=headers)
    error = assert_error(response, 400, "invalid_multipart")
    assert "malformed" in error["message"]


def test_file_part_without_a_filename_is_still_classified(client, png):
    body = b'--XyZ\r\nContent-Disposition: form-data; name="file"\r\n\r\n' + png
    body += b"\r\n--XyZ--\r\n"
    headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    response = client.post("/predict", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["label"] in client.get("/classes").json()["classes"]


def test_upload_over_the_limit_is_413(serve, tiny_models_dir, png):
    client = serve(tiny_models_dir, max_upload_bytes=16384)
    big = encode("PNG", size=(400, 400))
    assert len(big) > 16384 > len(png) + 1024

    error = assert_error(client.post("/predict", files=upload(big)), 413, "payload_too_large")

    assert "16384" in error["message"]
    assert client.post("/predict", files=upload(png)).status_code == 200


def _send_raw(settings: Settings, headers: list[tuple[bytes, bytes]], chunks: int) -> tuple:
    """Call the ASGI app directly, feeding a 1 KiB chunk per receive(); count reads."""
    app = create_app(settings)
    app.state.registry.refresh()  # a model is served: only the body size can refuse
    read = 0
    sent: list[dict] = []
    boundary = b"XyZ"
    preamble = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
        b'filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
    )

    async def receive() -> dict:
        nonlocal read
        read += 1
        if read == 1:
            return {"type": "http.request", "body": preamble, "more_body": True}
        return {"type": "http.request", "body": b"\0" * 1024, "more_body": read < chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    content_type = (b"content-type", b"multipart/form-data; boundary=" + boundary)
    scope = post_scope("/predict", [content_type, *headers])
    anyio.run(app, scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, read


def test_declared_oversize_body_is_refused_before_reading_it(make_settings, tiny_models_dir):
    settings = make_settings(tiny_models_dir, max_upload_bytes=64 * 1024)
    status, reads = _send_raw(settings, [(b"content-length", b"104857600")], chunks=100_000)

    assert status == 413
    assert reads == 0


def test_streamed_oversize_body_stops_at_the_limit(make_settings, tiny_models_dir):
    settings = make_settings(tiny_models_dir, max_upload_bytes=64 * 1024)
    status, reads = _send_raw(settings, [], chunks=100_000)  # chunked: no Content-Length

    assert status == 413
    assert reads <= 64 + 2  # stopped right after the limit, not after 100 MB


def test_no_model_on_disk_makes_readyz_and_predict_503(serve, tmp_path, png):
    client = serve(tmp_path / "empty-models")

    assert client.get("/healthz").status_code == 200
    ready = assert_error(client.get("/readyz"), 503, "model_unavailable")
    # it teaches the shipped model, not a model trained on drawings
    assert "python -m trainer assemble --models" in ready["message"]
    assert "synth" not in ready["message"]
    assert_error(client.post("/predict", files=upload(png)), 503, "model_unavailable")
    assert_error(client.get("/classes"), 503, "model_unavailable")
    assert client.get("/models").json()["served"] is None


def test_api_key_guards_every_route_but_the_probes(serve, tiny_models_dir, png):
    client = serve(tiny_models_dir, api_key="s3cret")
    key = {"X-API-Key": "s3cret"}
    schema = client.get("/openapi.json", headers=key).json()
    routes = [
        (method, path.replace("{name}", "bone-fracture").replace("{version}", "1"))
        for path, operations in schema["paths"].items()
        for method in operations
    ]
    routes += [("get", "/docs"), ("get", "/redoc"), ("get", "/openapi.json")]
    assert len(routes) >= 13

    for method, path in routes:
        response = client.request(method, path)
        if path in ("/healthz", "/readyz"):
            assert response.status_code == 200, path
        else:
            assert_error(response, 401, "unauthorized")
            wrong = client.request(method, path, headers={"X-API-Key": "wrong"})
            assert_error(wrong, 401, "unauthorized")
    for path in ("/classes", "/models", "/metrics", "/docs", "/redoc", "/v1/models/bone-fracture"):
        assert client.get(path, headers=key).status_code == 200, path
    assert client.post("/predict", files=upload(png), headers=key).status_code == 200
    assert 'status="401"' in client.get("/metrics", headers=key).text


def test_api_key_is_checked_before_the_body_is_parsed(serve, tiny_models_dir):
    client = serve(tiny_models_dir, api_key="s3cret")
    headers = {"Content-Type": "application/json"}
    url = "/v1/models/bone-fracture:predict"

    assert_error(client.post(url, content=b"{not json", headers=headers), 401, "unauthorized")
    keyed = {**headers, "X-API-Key": "s3cret"}
    assert client.post(url, content=b"{not json", headers=keyed).status_code == 422


def test_cors_allows_only_the_configured_origins(serve, tiny_models_dir):
    client = serve(tiny_models_dir, cors_origins=["http://ui.example"])
    preflight = {"Access-Control-Request-Method": "POST"}

    allowed = client.options("/predict", headers={"Origin": "http://ui.example", **preflight})
    other = client.options("/predict", headers={"Origin": "http://evil.example", **preflight})

    assert allowed.headers["access-control-allow-origin"] == "http://ui.example"
    assert "access-control-allow-origin" not in other.headers


def test_cors_origins_are_read_comma_separated_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BONEFRAC_CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("BONEFRAC_MODEL_VERSION", "3")

    settings = Settings(models_dir=tmp_path)

    assert settings.cors_origins == ["http://a.example", "http://b.example"]
    assert settings.model_version == 3


def test_unknown_route_and_wrong_method_use_the_error_format(client):
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_unexpected_failure_is_a_500_without_traceback(serve, tiny_models_dir, png):
    client = serve(tiny_models_dir, raise_server_exceptions=False)
    served = client.app.state.registry.current

    class Exploding:
        runtime = "tflite"
        input_shape = served.predictor.input_shape

        def run(self, images):
            raise RuntimeError("secret internal detail")

        predict = run

    client.app.state.registry.current = type(served)(
        **{**served.__dict__, "predictor": Exploding()}
    )
    response = client.post("/predict", files=upload(png))

    error = assert_error(response, 500, "internal_error")
    assert "secret" not in error["message"]
    client.app.state.registry.current = served
    assert client.post("/predict", files=upload(png)).status_code == 200
