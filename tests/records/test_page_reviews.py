"""The page: a reader corrects an answer under its card, and the second view lists it
first. Streamlit's AppTest drives the page; the service (stand-in model, SQLite) runs
under uvicorn in a thread on a loopback port, so the page talks to it over HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
from streamlit.testing.v1 import AppTest
from support.loopback import free_port
from support.records_standins import png, stand_in_model

from service.app import create_app
from ui.review import RECENT

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"


@pytest.fixture
def database_url() -> None:
    """SQLite only: the page does not see the database."""
    return


@pytest.fixture
def service(records_settings: Callable[..., Any]) -> Iterator[tuple[str, Any]]:
    """(URL, app) of a service on a loopback port."""
    app = create_app(records_settings())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if server.started:
                break
            thread.join(0.05)
        assert server.started, "the service did not start"
        app.state.registry.current = stand_in_model()
        yield url, app
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_reader_corrects_an_answer_and_finds_it_listed_first(
    service: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, app = service
    monkeypatch.setenv("BONEFRAC_API_URL", url)
    monkeypatch.delenv("BONEFRAC_API_KEY", raising=False)
    monkeypatch.delenv("BONEFRAC_REVIEWER_KEY", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.file_uploader[0].set_value(("hand.png", png(230), "image/png")).run()
    assert not at.exception, at.exception

    finding = next(r for r in at.radio if r.label == "Finding")
    assert finding.value == "Fracture"  # the model's finding, preselected
    kind = next(s for s in at.selectbox if s.label == "Fracture type")
    other = next(o for o in kind.options[1:] if o != kind.value)
    kind.set_value(other)
    next(t for t in at.text_area if t.label == "Note").set_value("callus, old fracture")
    next(t for t in at.text_input if t.label == "Reader").set_value("dr-a")
    next(b for b in at.button if b.label == "Save review").click().run()
    assert not at.exception, at.exception
    assert any("corrects the model" in s.value for s in at.success)

    [review] = requests.get(f"{url}/feedback", timeout=10).json()["reviews"]
    assert (review["reader"], review["fracture_type"], review["disagrees"]) == (
        "dr-a",
        other,
        True,
    )

    requests.post(f"{url}/predict", files={"file": ("b.png", png(240))}, timeout=10)
    assert app.state.records.log.flush(timeout=30)  # written within the log's pause
    at.sidebar.radio[0].set_value(RECENT).run()
    assert not at.exception, at.exception
    cards = [m.value for m in at.markdown if "· model " in m.value]
    assert len(cards) == 2
    assert cards[0].startswith(":red[**Disagreement**]")
    assert any("callus, old fracture" in m.value for m in at.markdown)
