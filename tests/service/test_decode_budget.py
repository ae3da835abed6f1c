"""Decoding is priced before it starts: requests whose images would cost too much are
refused from their headers, never decoded; the budget is a setting."""

from __future__ import annotations

import base64

import pytest
from support.sample_images import big_16bit_png, encode, upload
from test_errors import assert_error

import service.inference
import service.tfserving

MODEL = "bone-fracture"


def no_decoding(*_args, **_kwargs):
    raise AssertionError("an image was decoded; the request should have been refused first")


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
