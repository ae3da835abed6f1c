"""Model handling: newest or pinned version, hot reload under load, broken versions refused."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path

import pytest
from support.sample_images import encode, upload

from modelio.integrity import seal

MODEL = "bone-fracture"


def publish(models_dir: Path, source: int, target: int, class_prefix: str = "") -> Path:
    """Drop a copy of version ``source`` in as ``target`` the way the exporter does.

    ``class_prefix`` renames the classes, so an answer shows which version's metadata
    labelled it.
    """
    root = models_dir / MODEL
    staging = root / f".staging-{target}-test"
    shutil.copytree(root / str(source), staging)
    metadata = json.loads((staging / "metadata.json").read_text())
    metadata["version"] = target
    metadata["classes"] = [class_prefix + name for name in metadata["classes"]]
    (staging / "metadata.json").write_text(json.dumps(metadata))
    seal(staging)  # a new version on purpose: its integrity record follows
    staging.rename(root / str(target))
    return root / str(target)


def break_version(models_dir: Path, version: int, how: str) -> Path:
    """Create version ``version`` broken in one of several ways.

    Built in a hidden staging folder and renamed into place, so a poll never sees it
    half made (that would be a second, different refusal)."""
    final = models_dir / MODEL / str(version)
    path = models_dir / MODEL / f".staging-broken-{version}"
    shutil.copytree(models_dir / MODEL / "1", path)
    if how == "corrupt_tflite":
        (path / "model.tflite").write_bytes(b"this is not a flat buffer")
    elif how == "truncated_tflite":
        data = (path / "model.tflite").read_bytes()
        (path / "model.tflite").write_bytes(data[: len(data) // 3])
    elif how == "no_metadata":
        (path / "metadata.json").unlink()
    elif how == "half_copied":
        for item in path.iterdir():
            if item.name != "metadata.json":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
    elif how == "wrong_classes":
        metadata = json.loads((path / "metadata.json").read_text())
        metadata["classes"] = metadata["classes"][:3]
        (path / "metadata.json").write_text(json.dumps(metadata))
    else:
        raise AssertionError(how)
    path.rename(final)
    return final


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def served_version(client) -> int:
    return client.get("/readyz").json()["version"]


def test_serves_the_newest_version(serve, models_copy):
    publish(models_copy, 1, 2)
    publish(models_copy, 1, 10)  # numeric, not lexical, order

    assert served_version(serve(models_copy)) == 10


def test_serves_the_pinned_version(serve, models_copy):
    publish(models_copy, 1, 2)

    client = serve(models_copy, model_version=1)

    assert served_version(client) == 1
    assert client.post("/predict", files=upload(encode())).json()["version"] == 1


def test_hidden_staging_folders_are_ignored(serve, models_copy):
    shutil.copytree(models_copy / MODEL / "1", models_copy / MODEL / ".staging-5-abc")

    client = serve(models_copy)

    assert served_version(client) == 1
    assert [v["version"] for v in client.get("/models").json()["versions"]] == [1]


def test_hot_reload_under_concurrent_requests_has_zero_failures(serve, models_copy):
    client = serve(models_copy, reload_interval_s=0.05)
    image = encode("JPEG", "RGB")
    statuses: list[int] = []
    versions: set[int] = set()
    mixed: list[bool] = []
    stop = threading.Event()
    lock = threading.Lock()

    def hammer() -> None:
        while not stop.is_set():
            response = client.post("/predict", files=upload(image, "x.jpg"))
            with lock:
                statuses.append(response.status_code)
                if response.status_code == 200:
                    answer = response.json()
                    versions.add(answer["version"])
                    prefixed = {p["label"].startswith("v2 ") for p in answer["probabilities"]}
                    # labels and version always come from the same loaded model
                    mixed.append(prefixed != {answer["version"] == 2})

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: len(statuses) >= 20)
        publish(models_copy, 1, 2, class_prefix="v2 ")
        wait_for(lambda: 2 in versions)
        count = len(statuses)
        wait_for(lambda: len(statuses) >= count + 20)
    finally:
        stop.set()
        for worker in workers:
            worker.join()

    assert set(statuses) == {200}, f"{len(statuses) - statuses.count(200)} failed"
    assert versions == {1, 2}
    assert mixed
    assert not any(mixed), "an answer mixed one version's labels with another's"
    assert served_version(client) == 2


@pytest.mark.parametrize(
    "how", ["corrupt_tflite", "truncated_tflite", "no_metadata", "half_copied", "wrong_classes"]
)
def test_broken_new_version_is_refused_and_the_old_one_keeps_serving(
    serve, models_copy, caplog, how
):
    client = serve(models_copy, reload_interval_s=0.05)
    caplog.set_level(logging.ERROR, logger="service.registry")

    break_version(models_copy, 2, how)
    wait_for(lambda: any("refusing version 2" in r.getMessage() for r in caplog.records))

    assert served_version(client) == 1
    assert client.post("/predict", files=upload(encode())).json()["version"] == 1
    versions = {v["version"]: v for v in client.get("/models").json()["versions"]}
    assert versions[1]["state"] == "serving"
    assert versions[2]["state"] == "refused"
    assert versions[2]["reason"]
    assert "still serving version 1" in caplog.text
    loads = client.get("/metrics").text
    assert 'bonefrac_model_loads_total{outcome="refused"} 1.0' in loads


def test_refused_version_is_retried_once_its_files_change(serve, models_copy, caplog):
    client = serve(models_copy)
    registry = client.app.state.registry
    broken = break_version(models_copy, 2, "corrupt_tflite")
    registry.refresh()
    registry.refresh()  # unchanged files: not retried, not logged again
    assert caplog.text.count("refusing version 2") == 1

    shutil.copy2(models_copy / MODEL / "1" / "model.tflite", broken / "model.tflite")
    registry.refresh()

    assert served_version(client) == 2


def test_refused_version_deleted_from_disk_is_forgotten(serve, models_copy):
    client = serve(models_copy)
    registry = client.app.state.registry
    broken = break_version(models_copy, 2, "corrupt_tflite")
    registry.refresh()
    assert 2 in registry.refused

    shutil.rmtree(broken)
    registry.refresh()

    assert registry.refused == {}
    assert [v["version"] for v in client.get("/models").json()["versions"]] == [1]


def test_newest_version_broken_at_start_serves_the_previous_one(serve, models_copy):
    break_version(models_copy, 2, "corrupt_tflite")

    client = serve(models_copy)

    assert served_version(client) == 1


def test_model_appearing_later_makes_the_service_ready(serve, tmp_path, tiny_models_dir):
    models = tmp_path / "models"
    client = serve(models, reload_interval_s=0.05)
    assert client.get("/readyz").status_code == 503

    (models / MODEL).mkdir(parents=True)
    shutil.copytree(tiny_models_dir / MODEL / "1", models / MODEL / ".staging-1")
    (models / MODEL / ".staging-1").rename(models / MODEL / "1")

    wait_for(lambda: client.get("/readyz").status_code == 200)
    assert client.post("/predict", files=upload(encode())).status_code == 200
