"""The page's HTTP client: real answers parsed, every failure one friendly ServiceError.

Success paths run against the real service; the failure shapes a real service rarely
produces on demand (a hang, HTML from a proxy, a 500 without JSON) come from a scripted
loopback server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest
import requests

from ui.client import PredictionWarning, ServiceClient, ServiceError

Reply = tuple[int, str, bytes]  # status, content type, body


def test_predict_parses_the_real_service_answer(
    service_url: str, xray_bytes: tuple[str, bytes]
) -> None:
    name, data = xray_bytes
    client = ServiceClient(service_url)
    try:
        prediction = client.predict(name, data, "image/jpeg")
        classes = client.classes()
        raw = requests.post(f"{service_url}/predict", files={"file": (name, data)}, timeout=30)
    finally:
        client.close()

    body = raw.json()
    assert prediction.model == body["model"] == classes.model == "bone-fracture"
    assert prediction.version == body["version"] == classes.version == 1
    assert prediction.label == body["label"]
    assert prediction.confidence == pytest.approx(body["confidence"])
    assert sorted(p.label for p in prediction.probabilities) == sorted(classes.classes)
    values = [p.probability for p in prediction.probabilities]
    assert values == sorted(values, reverse=True)
    assert prediction.probabilities[0].label == prediction.label
    assert all(isinstance(w, PredictionWarning) and w.message for w in prediction.warnings)


def test_status_reports_ready_with_the_served_model(service_url: str) -> None:
    status = ServiceClient(service_url).status()
    assert status.alive
    assert status.ready
    assert (status.model, status.version) == ("bone-fracture", 1)


def test_service_error_message_is_passed_through(
    service_url: str,
) -> None:
    with pytest.raises(ServiceError) as caught:
        ServiceClient(service_url).predict("notes.txt", b"this is not an image", "text/plain")
    assert caught.value.status in {400, 415, 422}
    assert caught.value.code not in {"http_error", "bad_response"}  # the service's own code
    assert caught.value.message


def test_service_down_is_unreachable_not_a_traceback(dead_url: str) -> None:
    client = ServiceClient(dead_url, connect_timeout=1)
    with pytest.raises(ServiceError) as caught:
        client.predict("x.png", b"\x89PNG", "image/png")
    assert caught.value.code == "unreachable"
    assert "Cannot reach the prediction service" in caught.value.message
    assert dead_url in caught.value.message

    status = client.status()
    assert not status.alive
    assert not status.ready
    assert "Cannot reach" in status.detail


def test_slow_service_times_out_with_a_clear_message(scripted: Callable[..., str]) -> None:
    """The server answers only once the client has given up (an event, not a stopwatch):
    a client that waited for the answer would get a 200 and raise nothing."""
    gave_up = threading.Event()

    def slow(_path: str) -> Reply:
        gave_up.wait(timeout=60)
        return 200, "application/json", b"{}"

    client = ServiceClient(scripted(slow), read_timeout=0.3)
    try:
        with pytest.raises(ServiceError) as caught:
            client.predict("x.png", b"data", "image/png")
    finally:
        gave_up.set()
    assert caught.value.code == "timeout"
    assert "did not answer within 0.3 seconds" in caught.value.message


@pytest.mark.parametrize(
    ("reply", "code", "fragment"),
    [
        pytest.param(
            (503, "application/json", b'{"error": {"code": "no_model", "message": "No model."}}'),
            "no_model",
            "No model.",
            id="error-json",
        ),
        pytest.param(
            (502, "text/html", b"<html>Bad Gateway</html>"),
            "http_error",
            "HTTP 502",
            id="proxy-html-error",
        ),
        pytest.param(
            (503, "text/plain", b"unavailable"),
            "http_error",
            "no model loaded yet",
            id="plain-503",
        ),
        pytest.param(
            (200, "text/html", b"<html>not the API</html>"),
            "bad_response",
            "not a JSON object",
            id="html-200",
        ),
        pytest.param(
            (200, "application/json", json.dumps({"label": "x"}).encode()),
            "bad_response",
            "unexpected shape",
            id="wrong-shape",
        ),
    ],
)
def test_bad_answers_become_one_service_error(
    scripted: Callable[..., str], reply: Reply, code: str, fragment: str
) -> None:
    client = ServiceClient(scripted(lambda _path: reply))
    with pytest.raises(ServiceError) as caught:
        client.predict("x.png", b"data", "image/png")
    assert caught.value.code == code
    assert fragment in caught.value.message


def test_api_key_is_sent_on_every_call(scripted: Callable[..., str]) -> None:
    seen: list[str | None] = []

    class Capture(requests.adapters.HTTPAdapter):
        def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
            seen.append(request.headers.get("X-Test-Key"))
            return super().send(request, **kwargs)  # type: ignore[arg-type]

    session = requests.Session()
    session.mount("http://", Capture())
    url = scripted(lambda _path: (200, "application/json", b'{"status": "ok"}'))
    client = ServiceClient(url, api_key="s3cret", api_key_header="X-Test-Key", session=session)
    client.status()
    assert seen == ["s3cret", "s3cret"]
