"""A version is served only as it was exported (issue 18, item 8): its metadata.json and
files are checked against the integrity record the exporter wrote into it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from support.sample_images import encode, upload

from modelio.integrity import INTEGRITY_KEY, integrity_record, seal, verify_integrity

MODEL = "bone-fracture"


def _version(models: Path, number: int) -> Path:
    return models / MODEL / str(number)


def _copy(models: Path, source: int, target: int) -> Path:
    """``source`` copied to ``target`` via a hidden staging folder (as a publisher does)."""
    staging = models / MODEL / f".staging-{target}"
    shutil.copytree(_version(models, source), staging)
    return staging


def _rewrite_metadata(version: Path, change) -> None:
    path = version / "metadata.json"
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))


def _refusal(client, version: int) -> str:
    versions = {v["version"]: v for v in client.get("/models").json()["versions"]}
    assert versions[version]["state"] == "refused", versions[version]
    return versions[version]["reason"]


def test_a_copy_with_its_classes_reversed_is_refused_with_the_reason(serve, models_copy):
    seal(_version(models_copy, 1))  # as the exporter writes it
    staging = _copy(models_copy, 1, 7)
    _rewrite_metadata(staging, lambda m: m["classes"].reverse())
    staging.rename(_version(models_copy, 7))

    client = serve(models_copy)

    assert client.get("/models").json()["served"]["version"] == 1
    assert "metadata.json was changed after export" in _refusal(client, 7)
    answer = client.post("/predict", files=upload(encode("PNG"))).json()
    assert answer["version"] == 1


def test_a_changed_model_file_is_refused(serve, models_copy):
    seal(_version(models_copy, 1))
    staging = _copy(models_copy, 1, 2)
    tflite = staging / "model.tflite"
    data = bytearray(tflite.read_bytes())
    data[-1] ^= 0xFF  # one byte of the last weight
    tflite.write_bytes(bytes(data))
    staging.rename(_version(models_copy, 2))

    client = serve(models_copy)

    assert "model.tflite changed after export" in _refusal(client, 2)


def test_an_untouched_copy_is_served_whatever_its_number(serve, models_copy):
    seal(_version(models_copy, 1))
    _copy(models_copy, 1, 3).rename(_version(models_copy, 3))

    client = serve(models_copy)

    assert client.get("/models").json()["served"]["version"] == 3


def test_the_record_written_before_publication_holds_after_it(tmp_path):
    """The exporter computes the record from the document it is about to write, before the
    version number is set: both must hash alike once written and read back."""
    version = tmp_path / "1"
    version.mkdir()
    (version / "model.tflite").write_bytes(b"weights")
    document = {"name": MODEL, "version": None, "classes": ["a", "b"], "score": 0.1 + 0.2}
    document[INTEGRITY_KEY] = integrity_record(version, document)
    document["version"] = 1
    (version / "metadata.json").write_text(json.dumps(document, indent=2))

    assert verify_integrity(version, json.loads((version / "metadata.json").read_text()))


def test_a_version_without_a_record_is_served_as_before(serve, models_copy):
    metadata = json.loads((_version(models_copy, 1) / "metadata.json").read_text())
    metadata.pop(INTEGRITY_KEY, None)
    (_version(models_copy, 1) / "metadata.json").write_text(json.dumps(metadata))

    assert verify_integrity(_version(models_copy, 1), metadata) is False
    assert serve(models_copy).get("/readyz").status_code == 200


def test_the_exporter_writes_a_record_the_service_verifies(tiny_models_dir):
    version = _version(tiny_models_dir, 1)
    metadata = json.loads((version / "metadata.json").read_text())

    assert set(metadata[INTEGRITY_KEY]["files"]) >= {"model.tflite", "saved_model.pb"}
    assert verify_integrity(version, metadata) is True
