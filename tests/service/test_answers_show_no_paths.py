"""No answer, error or status shows an absolute path of the serving machine."""

from __future__ import annotations

import json
import shutil

from support.sample_images import encode, upload

from modelio.integrity import seal

MODEL = "bone-fracture"


def test_no_answer_shows_an_absolute_path(serve, models_copy, tmp_path):
    version = models_copy / MODEL / "1"
    metadata = json.loads((version / "metadata.json").read_text())
    metadata["dataset"] = {**metadata.get("dataset", {}), "source": str(tmp_path / "secret-data")}
    (version / "metadata.json").write_text(json.dumps(metadata))
    seal(version)  # changed on purpose: its integrity record follows
    broken = models_copy / MODEL / "2"
    shutil.copytree(version, broken)
    (broken / "model.tflite").write_bytes(b"not a flat buffer")
    seal(broken)  # refused by the runtime, whose reason names the file
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
