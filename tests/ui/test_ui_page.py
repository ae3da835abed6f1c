"""The page, run by Streamlit's AppTest against a real service on loopback."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import requests
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

Reply = tuple[int, str, bytes]  # status, content type, body
APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"
RUN_TIMEOUT = 60


def run_page(monkeypatch: pytest.MonkeyPatch, url: str) -> AppTest:
    monkeypatch.setenv("BONEFRAC_API_URL", url)
    monkeypatch.delenv("BONEFRAC_API_KEY", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def chart(at: AppTest) -> tuple[list[str], dict[str, float]]:
    """The page's single probability chart: its class order on screen, and its data."""
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1
    proto = charts[0].proto
    spec = json.loads(proto.spec)
    order = spec["layer"][0]["encoding"]["y"]["sort"]
    rows = pa.ipc.open_stream(proto.data.data).read_all().to_pylist()
    return order, {row["Class"]: row["Probability"] for row in rows}


def test_upload_shows_the_services_prediction(
    monkeypatch: pytest.MonkeyPatch, service_url: str, xray_bytes: tuple[str, bytes]
) -> None:
    name, data = xray_bytes
    expected = requests.post(
        f"{service_url}/predict", files={"file": (name, data)}, timeout=30
    ).json()

    at = run_page(monkeypatch, service_url)
    assert "not a diagnosis" in at.info[0].value
    assert [s.value for s in at.sidebar.success] == ["Ready"]
    sidebar_text = "\n".join(m.value for m in at.sidebar.markdown)
    for label in (p["label"] for p in expected["probabilities"]):
        assert label in sidebar_text
    # what the served model learned from, as the service says it
    sidebar_captions = " ".join(c.value for c in at.sidebar.caption)
    assert f"Trained on {expected['trained_on']}." in sidebar_captions

    at.file_uploader[0].set_value((name, data, "image/jpeg"))
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]

    assert [h.value for h in at.main.header] == [expected["label"]]
    assert {m.label: m.value for m in at.metric} == {"Confidence": f"{expected['confidence']:.1%}"}
    captions = " ".join(c.value for c in at.caption)
    assert f"**{expected['model']}**, version **{expected['version']}**" in captions
    assert f"trained on {expected['trained_on']}" in captions

    order, data = chart(at)
    assert order == [p["label"] for p in expected["probabilities"]]  # every class, sorted
    assert data == pytest.approx({p["label"]: p["probability"] for p in expected["probabilities"]})
    shown_warnings = " ".join(w.value for w in at.warning)
    for warning in expected["warnings"]:
        assert warning["message"] in shown_warnings
    assert len(at.get("image")) == 1


def test_several_uploads_each_get_a_card_and_errors_stay_local(
    monkeypatch: pytest.MonkeyPatch, service_url: str, xray_bytes: tuple[str, bytes]
) -> None:
    name, data = xray_bytes
    at = run_page(monkeypatch, service_url)
    at.file_uploader[0].set_value(
        [(name, data, "image/jpeg"), ("broken.png", b"not really a png", "image/png")]
    )
    at.run()
    assert not at.exception, at.exception
    assert len(at.get("vega_lite_chart")) == 1  # the good file got its chart...
    assert len(at.error) == 1  # ...and the broken one a message, not a traceback
    assert at.error[0].value
    assert "Traceback" not in at.error[0].value


def test_service_down_gives_a_friendly_message(
    monkeypatch: pytest.MonkeyPatch, dead_url: str, xray_bytes: tuple[str, bytes]
) -> None:
    at = run_page(monkeypatch, dead_url)
    sidebar_errors = [e.value for e in at.sidebar.error]
    assert len(sidebar_errors) == 1
    assert "Cannot reach the prediction service" in sidebar_errors[0]

    name, data = xray_bytes
    at.file_uploader[0].set_value((name, data, "image/jpeg"))
    at.run()
    assert not at.exception, at.exception
    main_errors = [e.value for e in at.main.error]
    assert len(main_errors) == 1
    assert "Cannot reach the prediction service" in main_errors[0]
    assert dead_url in main_errors[0]
    assert not at.get("vega_lite_chart")


def test_slow_service_gives_a_timeout_message_not_a_hang(
    monkeypatch: pytest.MonkeyPatch,
    scripted: Callable[[Callable[[str], Reply]], str],
    xray_bytes: tuple[str, bytes],
) -> None:
    """Status answers at once, predictions hang until the test lets them go: the page
    gives up after its own timeout, while the service is still holding the request.

    No clock in the assertions (a busy CI machine once took 3.03 s against a 2.5 s
    bound): the proof is that the page finished before the event was set. A page that
    hung would exceed AppTest's run timeout and fail."""
    release = threading.Event()
    held: list[str] = []

    def reply(path: str) -> Reply:
        if path.startswith("/predict"):
            held.append(path)
            release.wait(RUN_TIMEOUT * 2)
        return 200, "application/json", b'{"status": "ok"}'

    monkeypatch.setenv("BONEFRAC_API_TIMEOUT", "0.5")
    at = run_page(monkeypatch, scripted(reply))
    name, data = xray_bytes
    at.file_uploader[0].set_value((name, data, "image/jpeg"))
    try:
        at.run()
        assert held  # the prediction reached the service...
        assert not release.is_set()  # ...and the page answered while it was still held
    finally:
        release.set()
    assert not at.exception, at.exception
    (message,) = [e.value for e in at.main.error]
    assert "did not answer within 0.5 seconds" in message


def test_uploader_limit_is_the_services_and_the_tab_icon_is_local(
    monkeypatch: pytest.MonkeyPatch, dead_url: str
) -> None:
    """The uploader says the service's 10 MiB, not Streamlit's 200 MB; the tab icon is an
    image the page serves itself, not a material icon or emoji fetched from the internet."""
    configs: list[dict] = []
    real = st.set_page_config
    monkeypatch.setattr(st, "set_page_config", lambda **kw: configs.append(kw) or real(**kw))
    at = run_page(monkeypatch, dead_url)

    assert at.file_uploader[0].proto.max_upload_size_mb == 10
    assert len(configs) == 1
    assert isinstance(configs[0]["page_icon"], Image.Image)

    monkeypatch.setenv("BONEFRAC_MAX_UPLOAD_BYTES", str(3 * 1024 * 1024))
    at = run_page(monkeypatch, dead_url)
    assert at.file_uploader[0].proto.max_upload_size_mb == 3


def test_a_new_model_version_is_asked_again_and_the_same_one_is_not(
    monkeypatch: pytest.MonkeyPatch,
    scripted: Callable[[Callable[[str], Reply]], str],
    xray_bytes: tuple[str, bytes],
) -> None:
    """Answers are kept per served version: reruns reuse them, a hot reload refreshes them."""
    served = {"version": 1}
    predictions: list[int] = []

    def reply(path: str) -> Reply:
        version = served["version"]
        if path.startswith("/predict"):
            predictions.append(version)
            label = f"Answer of v{version}"
            body = {
                "model": "m",
                "version": version,
                "label": label,
                "confidence": 0.9,
                "probabilities": [
                    {"label": label, "probability": 0.9},
                    {"label": "Other", "probability": 0.1},
                ],
                "warnings": [],
            }
        elif path.startswith("/classes"):
            body = {"model": "m", "version": version, "classes": ["Other", f"Answer of v{version}"]}
        else:
            body = {"status": "ready", "model": "m", "version": version}
        return 200, "application/json", json.dumps(body).encode()

    at = run_page(monkeypatch, scripted(reply))
    name, data = xray_bytes
    at.file_uploader[0].set_value((name, data, "image/jpeg"))
    at.run()
    at.run()  # a rerun with the same model: the stored answer is shown again
    assert predictions == [1]
    assert [h.value for h in at.main.header] == ["Answer of v1"]

    served["version"] = 2  # the service hot-reloads a newer model
    at.run()

    assert not at.exception, at.exception
    assert predictions == [1, 2]
    assert [h.value for h in at.main.header] == ["Answer of v2"]


def _heatmap_png_base64() -> str:
    heat = Image.new("L", (40, 20), 0)
    heat.paste(255, (0, 0, 10, 5))  # evidence in the top-left corner
    buffer = io.BytesIO()
    heat.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_the_heatmap_is_asked_for_shown_over_the_image_and_can_be_hidden(
    monkeypatch: pytest.MonkeyPatch,
    scripted: Callable[[Callable[[str], Reply]], str],
    xray_bytes: tuple[str, bytes],
) -> None:
    asked: list[str] = []

    def reply(path: str) -> Reply:
        if path.startswith("/predict"):
            asked.append(path)
            body = {
                "model": "m",
                "version": 1,
                "label": "Spiral Fracture",
                "confidence": 0.6,
                "probabilities": [
                    {"label": "Spiral Fracture", "probability": 0.6},
                    {"label": "Other", "probability": 0.4},
                ],
                "warnings": [],
                "explanation": {
                    "method": "class-activation-map",
                    "label": "Spiral Fracture",
                    "heatmap_png": _heatmap_png_base64(),
                },
            }
        elif path.startswith("/classes"):
            body = {"model": "m", "version": 1, "classes": ["Other", "Spiral Fracture"]}
        else:
            body = {"status": "ready", "model": "m", "version": 1}
        return 200, "application/json", json.dumps(body).encode()

    def image_caption(at: AppTest) -> str:
        [image] = at.get("image")
        return image.proto.imgs[0].caption

    at = run_page(monkeypatch, scripted(reply))
    name, data = xray_bytes
    at.file_uploader[0].set_value((name, data, "image/jpeg"))
    at.run()
    assert not at.exception, at.exception
    assert asked == ["/predict?explain=true"]
    assert "where the model looked for Spiral Fracture" in image_caption(at)
    assert "not proof of a fracture" in " ".join(c.value for c in at.caption)
    assert at.slider[0].value == 50

    at.toggle[0].set_value(False)
    at.run()
    assert "where the model looked" not in image_caption(at)
    assert at.slider[0].disabled
    assert asked == ["/predict?explain=true"]  # the toggle redraws; it asks nothing again


def test_a_model_that_cannot_explain_is_said_under_the_image_not_as_a_warning(
    monkeypatch: pytest.MonkeyPatch, service_url: str, xray_bytes: tuple[str, bytes]
) -> None:
    """The session's tiny CNN has no class maps: the answer shows, without a false alarm."""
    at = run_page(monkeypatch, service_url)
    name, data = xray_bytes
    at.file_uploader[0].set_value((name, data, "image/jpeg"))
    at.run()
    assert not at.exception, at.exception
    assert "cannot show where it looked" not in " ".join(w.value for w in at.warning)
    [image] = at.get("image")
    assert "this model version cannot show where it looked" in image.proto.imgs[0].caption


def fracture_answer(
    fracture: dict[str, Any],
    *,
    probabilities: dict[str, float],
    classes: list[str],
    summary: str | None = None,
) -> Callable[[str], Reply]:
    """A scripted service of model ``m`` version 1 whose answer carries ``fracture`` and
    ranks "Spiral Fracture" first at 0.6 confidence: only the fracture block, the
    probabilities listed and the classes differ between the tests that use it."""

    def reply(path: str) -> Reply:
        if path.startswith("/predict"):
            body: dict[str, Any] = {"model": "m", "version": 1}
            if summary is not None:
                body["summary"] = summary
            body.update(
                fracture=fracture,
                label="Spiral Fracture",
                confidence=0.6,
                probabilities=[
                    {"label": label, "probability": p} for label, p in probabilities.items()
                ],
                warnings=[],
            )
        elif path.startswith("/classes"):
            body = {"model": "m", "version": 1, "classes": classes}
        else:
            body = {"status": "ready", "model": "m", "version": 1}
        return 200, "application/json", json.dumps(body).encode()

    return reply


def test_the_finding_leads_the_type_follows_and_the_boxes_can_be_hidden(
    monkeypatch: pytest.MonkeyPatch,
    scripted: Callable[[Callable[[str], Reply]], str],
    xray_bytes: tuple[str, bytes],
) -> None:
    name, data = xray_bytes
    width, height = Image.open(io.BytesIO(data)).size
    reply = fracture_answer(
        {
            "probability": 0.91,
            "finding": "fracture",
            "thresholds": {
                "rule_out": {"threshold": 0.2, "sensitivity": 0.95, "specificity": 0.5},
                "rule_in": {"threshold": 0.8, "sensitivity": 0.6, "specificity": 0.95},
                "region_threshold": 0.3,
                "measured_on": "held-out folds",
            },
            "regions": [{"box": [0, 0, width / 2, height / 2], "score": 0.8}],
            "image_size": [width, height],
        },
        probabilities={"Spiral Fracture": 0.6, "Other": 0.4},
        classes=["Other", "Spiral Fracture"],
        summary="Fracture likely ...",
    )

    at = run_page(monkeypatch, scripted(reply))
    at.file_uploader[0].set_value((name, data, "image/jpeg"))
    at.run()
    assert not at.exception, at.exception
    assert [h.value for h in at.main.header] == ["Fracture likely"]
    assert [s.value for s in at.main.subheader] == ["Spiral Fracture"]
    captions = [c.value for c in at.caption]
    assert captions.index("Is a bone broken?") < captions.index(
        "If this is a fracture, its type is most likely"
    )
    assert {m.label: m.value for m in at.metric}["Fracture probability"] == "91.0%"
    [image] = at.get("image")
    assert "1 fracture box (cyan)" in image.proto.imgs[0].caption

    boxes = next(t for t in at.toggle if t.label == "Show fracture boxes")
    boxes.set_value(False)
    at.run()
    [image] = at.get("image")
    assert "fracture box" not in image.proto.imgs[0].caption


def test_a_normal_radiograph_reads_no_fracture_seen_not_a_type(
    monkeypatch: pytest.MonkeyPatch,
    scripted: Callable[[Callable[[str], Reply]], str],
    xray_bytes: tuple[str, bytes],
) -> None:
    name, data = xray_bytes
    reply = fracture_answer(
        {
            "probability": 0.04,
            "finding": "no_fracture",
            "thresholds": {},
            "regions": [],
            "image_size": [10, 10],
        },
        probabilities={"Spiral Fracture": 1.0},
        classes=["Spiral Fracture", "Other"],
    )

    at = run_page(monkeypatch, scripted(reply))
    at.file_uploader[0].set_value((name, data, "image/jpeg"))
    at.run()
    assert not at.exception, at.exception
    assert [h.value for h in at.main.header] == ["No fracture seen"]
    # the type is still there, but only as the answer to "if this is a fracture"
    assert [s.value for s in at.main.subheader] == ["Spiral Fracture"]
    assert "If this is a fracture, its type is most likely" in [c.value for c in at.caption]
