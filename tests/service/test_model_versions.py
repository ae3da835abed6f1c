"""Which runtime serves a version, and what happens as versions are deleted or replaced
under the running service."""

from __future__ import annotations

import gc
import shutil
import textwrap
import weakref

import pytest
from support.direct_calls import run_python
from support.sample_images import encode, upload
from test_errors import assert_error

MODEL = "bone-fracture"


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
