"""The prediction, model and health routes over the session's tiny trained model."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest
from support.sample_images import colourful_png, encode, upload

from modelio.artifact import read_metadata

CLASSES_FILE_ORDER = "classes"


def served_classes(models_dir: Path) -> list[str]:
    return read_metadata(models_dir / "bone-fracture" / "1")[CLASSES_FILE_ORDER]


def assert_prediction(body: dict, classes: list[str]) -> None:
    """The documented shape: every class once, sorted, summing to 1, top = label."""
    assert body["model"] == "bone-fracture"
    assert body["version"] == 1
    probabilities = body["probabilities"]
    assert sorted(p["label"] for p in probabilities) == sorted(classes)
    values = [p["probability"] for p in probabilities]
    assert values == sorted(values, reverse=True)
    assert math.isclose(sum(values), 1.0, abs_tol=1e-9)
    assert body["label"] == probabilities[0]["label"]
    assert body["confidence"] == values[0]
    assert isinstance(body["warnings"], list)


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("JPEG", "L"),
        ("JPEG", "RGB"),
        ("PNG", "L"),
        ("PNG", "RGBA"),
        ("PNG", "I;16"),
        ("BMP", "RGB"),
        ("TIFF", "L"),
        ("TIFF", "I;16"),
        ("WEBP", "RGB"),
        ("WEBP", "RGBA"),
    ],
)
def test_predict_accepts_every_format_and_mode(client, tiny_models_dir, fmt, mode):
    response = client.post("/predict", files=upload(encode(fmt, mode), f"x.{fmt.lower()}"))

    assert response.status_code == 200, response.text
    assert_prediction(response.json(), served_classes(tiny_models_dir))


def test_predict_real_radiographs_get_no_colour_warning(client, real_dataset, tiny_models_dir):
    classes = served_classes(tiny_models_dir)
    for path in [
        sorted(folder.glob("Train/*.jpg"))[0] for folder in sorted(real_dataset.iterdir())
    ]:
        response = client.post("/predict", files=upload(path.read_bytes(), path.name))

        assert response.status_code == 200, response.text
        assert_prediction(response.json(), classes)
        assert "not_radiograph" not in {w["code"] for w in response.json()["warnings"]}


def test_colourful_image_warns_not_a_radiograph(client):
    response = client.post("/predict", files=upload(colourful_png()))

    assert response.status_code == 200
    assert "not_radiograph" in {w["code"] for w in response.json()["warnings"]}


def test_low_confidence_warning_follows_the_threshold(serve, tiny_models_dir, png):
    always = serve(tiny_models_dir, confidence_threshold=1.0).post("/predict", files=upload(png))
    never = serve(tiny_models_dir, confidence_threshold=0.0).post("/predict", files=upload(png))

    assert "low_confidence" in {w["code"] for w in always.json()["warnings"]}
    assert "low_confidence" not in {w["code"] for w in never.json()["warnings"]}


def test_batch_answers_each_file_in_order_and_isolates_bad_ones(client, tiny_models_dir):
    files = [
        ("files", ("a.png", encode("PNG", seed=1), "image/png")),
        ("files", ("notes.txt", b"just text", "text/plain")),
        ("files", ("b.jpg", encode("JPEG", "RGB", seed=2), "image/jpeg")),
        ("files", ("empty.png", b"", "image/png")),
    ]
    response = client.post("/predict/batch", files=files)

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["a.png", "notes.txt", "b.jpg", "empty.png"]
    assert [r["status"] for r in results] == [200, 415, 200, 400]
    assert results[1]["error"]["code"] == "unsupported_media_type"
    assert results[1]["prediction"] is None
    for good in (results[0], results[2]):
        assert good["error"] is None
        assert_prediction(good["prediction"], served_classes(tiny_models_dir))


def test_batch_answer_matches_single_predictions(client):
    images = [encode("PNG", seed=s) for s in range(3)]
    batch = client.post(
        "/predict/batch",
        files=[("files", (f"{i}.png", d, "image/png")) for i, d in enumerate(images)],
    ).json()["results"]
    singles = [client.post("/predict", files=upload(d)).json() for d in images]

    # same preprocessing, same one-image invoke: identical, not merely close
    assert [r["prediction"]["probabilities"] for r in batch] == [
        s["probabilities"] for s in singles
    ]


def test_batch_refuses_too_many_files(serve, tiny_models_dir, png):
    client = serve(tiny_models_dir, max_batch_files=2)
    files = [("files", (f"{i}.png", png, "image/png")) for i in range(3)]

    response = client.post("/predict/batch", files=files)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_many_files"


def test_classes_are_in_output_order(client, tiny_models_dir):
    response = client.get("/classes")

    assert response.status_code == 200
    assert response.json() == {
        "model": "bone-fracture",
        "version": 1,
        "classes": served_classes(tiny_models_dir),
        "trained_on": "80 images in 10 classes of synthetic drawings (trainer synth), "
        "not real radiographs",
    }


def test_models_lists_versions_and_the_served_metadata(client):
    body = client.get("/models").json()

    assert body["name"] == "bone-fracture"
    assert body["versions"] == [{"version": 1, "state": "serving", "reason": None}]
    assert body["served"]["version"] == 1
    assert body["served"]["runtime"] == "openvino-f32"  # the default, installed with it
    assert body["served"]["metadata"]["input"]["height"] == 32


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {
        "status": "ready",
        "model": "bone-fracture",
        "version": 1,
    }


def test_metrics_move_after_requests(client, png):
    def sample(text: str, prefix: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    before = client.get("/metrics").text
    for _ in range(3):
        client.post("/predict", files=upload(png))
    client.post("/predict", files=upload(b"text"))
    after = client.get("/metrics")

    assert after.headers["content-type"].startswith("text/plain")
    ok = 'bonefrac_http_requests_total{method="POST",route="/predict",status="200"}'
    refused = 'bonefrac_http_requests_total{method="POST",route="/predict",status="415"}'
    assert sample(after.text, ok) - sample(before, ok) == 3
    assert sample(after.text, refused) - sample(before, refused) == 1
    assert (
        sample(after.text, "bonefrac_predictions_total{")
        - sample(before, "bonefrac_predictions_total{")
        == 3
    )
    assert sample(after.text, 'bonefrac_http_request_duration_seconds_count{route="/predict"}') == 4
    assert 'bonefrac_model_version{model="bone-fracture"} 1.0' in after.text


def test_openapi_documents_the_response_shapes(client):
    schema = client.get("/openapi.json").json()

    predict = schema["paths"]["/predict"]["post"]
    assert predict["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Prediction"
    }
    assert "415" in predict["responses"]
    form = predict["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"]
    assert form["properties"]["file"]["format"] == "binary"
    batch = schema["paths"]["/predict/batch"]["post"]["requestBody"]["content"]
    assert batch["multipart/form-data"]["schema"]["properties"]["files"]["type"] == "array"
    assert {"/predict/batch", "/classes", "/models", "/v1/models/{name}:predict"} <= set(
        schema["paths"]
    )
    assert client.get("/docs").status_code == 200


# --- TF Serving's REST API -----------------------------------------------------------


def test_tf_serving_predict_matches_predict(client, tiny_models_dir, png):
    classes = served_classes(tiny_models_dir)
    body = {"instances": [{"b64": base64.b64encode(png).decode()}]}

    response = client.post("/v1/models/bone-fracture:predict", json=body)

    assert response.status_code == 200, response.text
    [row] = response.json()["predictions"]
    ranked = client.post("/predict", files=upload(png)).json()["probabilities"]
    assert row == pytest.approx(
        [{p["label"]: p["probability"] for p in ranked}[c] for c in classes]
    )


def test_tf_serving_accepts_named_inputs_pixels_and_columnar_format(client, png):
    b64 = {"b64": base64.b64encode(png).decode()}
    url = "/v1/models/bone-fracture:predict"
    reference = client.post(url, json={"instances": [b64]}).json()["predictions"][0]

    named = client.post(
        url, json={"signature_name": "serve_bytes", "instances": [{"image_bytes": b64}]}
    )
    columnar = client.post(url, json={"inputs": {"image_bytes": [b64, b64]}})
    pixels = client.post(url, json={"instances": [[[[127.0]] * 32] * 32]})
    versioned = client.post("/v1/models/bone-fracture/versions/1:predict", json={"inputs": [b64]})

    assert named.json()["predictions"][0] == pytest.approx(reference)
    assert columnar.json()["outputs"] == [pytest.approx(reference)] * 2
    assert pixels.status_code == 200
    assert len(pixels.json()["predictions"][0]) == len(reference)
    assert versioned.json()["outputs"][0] == pytest.approx(reference)


def test_tf_serving_output_filter_returns_named_outputs_and_refuses_unknown_ones(client, png):
    b64 = {"b64": base64.b64encode(png).decode()}
    url = "/v1/models/bone-fracture:predict"
    reference = client.post(url, json={"instances": [b64]}).json()["predictions"][0]

    rows = client.post(url, json={"instances": [b64], "output_filter": ["probabilities"]})
    columns = client.post(url, json={"inputs": [b64, b64], "output_filter": ["probabilities"]})
    unknown = client.post(url, json={"instances": [b64], "output_filter": ["fracture_map"]})

    assert rows.json()["predictions"] == [{"probabilities": pytest.approx(reference)}]
    assert columns.json()["outputs"] == {"probabilities": [pytest.approx(reference)] * 2}
    assert unknown.status_code == 400
    assert "'fracture_map'" in unknown.json()["error"]["message"]
    assert "probabilities" in unknown.json()["error"]["message"]


def test_tf_serving_model_status(client):
    response = client.get("/v1/models/bone-fracture")

    assert response.json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


@pytest.mark.parametrize(
    ("url", "body", "status"),
    [
        ("/v1/models/unknown:predict", {"instances": [{"b64": ""}]}, 404),
        ("/v1/models/bone-fracture/versions/7:predict", {"instances": [{"b64": ""}]}, 404),
        ("/v1/models/bone-fracture:predict", {"instances": [{"b64": "%%%"}]}, 400),
        ("/v1/models/bone-fracture:predict", {"instances": [{"b64": "dGV4dA=="}]}, 415),
        ("/v1/models/bone-fracture:predict", {"instances": [[1.0, 2.0]]}, 400),
        ("/v1/models/bone-fracture:predict", {"instances": []}, 400),
        ("/v1/models/bone-fracture:predict", {"signature_name": "nope", "instances": [[1]]}, 400),
        ("/v1/models/bone-fracture:predict", {"something": "else"}, 400),
    ],
)
def test_tf_serving_errors(client, url, body, status):
    response = client.post(
        url, content=json.dumps(body), headers={"content-type": "application/json"}
    )

    assert response.status_code == status, response.text
    assert set(response.json()["error"]) >= {"code", "message"}


def test_tf_serving_status_of_unknown_model_is_404(client):
    response = client.get("/v1/models/unknown")

    assert response.status_code == 404
    assert "bone-fracture" in response.json()["error"]["message"]


@pytest.mark.parametrize("value", [-1.0, 256.0, float("nan")])
def test_tf_serving_refuses_pixels_out_of_range(client, value):
    row = [[127.0]] * 32
    image = [row] * 31 + [[[value], *row[1:]]]
    # NaN is not valid JSON; send it the way Python's json module writes it
    import json

    response = client.post(
        "/v1/models/bone-fracture:predict",
        content=json.dumps({"instances": [image]}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "0..255" in response.json()["error"]["message"]
