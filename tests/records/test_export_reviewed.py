"""``trainer export-reviewed``: the readers' verdicts become a dataset the trainer reads;
a DICOM upload is kept without the patient's identifiers."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from support.dicom_samples import PHI_STRINGS, image_dataset, read, rg3, with_phi, write
from support.records_standins import jpeg, png

from service.records.tables import ImageRow, PredictionRow
from trainer.cli import main as trainer_main
from trainer.data import discover
from trainer.reviewed import export_reviewed

BRIGHT, DARK = 230, 20


def _answer(client: Any, name: str, data: bytes, media: str = "image/png") -> dict[str, Any]:
    response = client.post("/predict", files={"file": (name, data, media)})
    assert response.status_code == 200
    return response.json()


def _review(client: Any, answer: dict[str, Any], **fields: Any) -> None:
    body = {"prediction_id": answer["prediction_id"], "reader": "dr-a", **fields}
    assert client.post("/feedback", json=body).status_code in (200, 201)


def test_reviewed_cases_become_class_folders(start_app: Callable, tmp_path: Path) -> None:
    client = start_app(store_images=True)
    records = client.app.state.records
    a = _answer(client, "a.png", png(BRIGHT))
    b = _answer(client, "b.jpg", jpeg(200), "image/jpeg")
    c = _answer(client, "c.png", png(DARK))
    d = _answer(client, "d.png", png(120))  # reviewed with a note only
    a_again = _answer(client, "a.png", png(BRIGHT))  # the same image, answered again
    _review(client, a, finding="fracture", fracture_type="Spiral Fracture")
    _review(client, b, finding="fracture", fracture_type="Avulsion fracture")
    _review(client, c, finding="no_fracture")
    _review(client, d, comment="poor exposure")
    _review(client, a_again, finding="fracture", fracture_type="Greenstick fracture")  # latest

    not_kept = start_app(store_images=False)  # a second app, the same database
    e = _answer(not_kept, "e.png", png(150))
    _review(not_kept, e, finding="fracture", fracture_type="Spiral Fracture")

    out = tmp_path / "reviewed"
    summary = export_reviewed(out, records.url, no_fracture_folder="No fracture")
    assert dict(summary.written) == {
        "Greenstick fracture": 1,
        "Avulsion fracture": 1,
        "No fracture": 1,
    }
    assert summary.left_out["no fracture type given"] == 1
    assert sum(n for why, n in summary.left_out.items() if "not kept" in why) == 1
    greenstick = next((out / "Greenstick fracture").iterdir())
    assert greenstick.read_bytes() == png(BRIGHT)
    assert greenstick.name == hashlib.sha256(png(BRIGHT)).hexdigest()[:16] + ".png"
    assert next((out / "Avulsion fracture").iterdir()).suffix == ".jpg"

    index = discover(out)
    assert index.classes == ["Avulsion fracture", "Greenstick fracture", "No fracture"]
    with (out / "manifest.csv").open() as handle:
        manifest = list(csv.DictReader(handle))
    assert {row["reader"] for row in manifest} == {"dr-a"}
    assert {row["prediction_id"] for row in manifest} >= {a_again["prediction_id"]}


def test_export_command(start_app: Callable, tmp_path: Path, capsys: Any) -> None:
    client = start_app(store_images=True)
    answer = _answer(client, "a.png", png(BRIGHT))
    _review(client, answer, finding="fracture", fracture_type="Spiral Fracture")
    url = client.app.state.records.url.render_as_string(hide_password=False)
    out = tmp_path / "out"
    assert trainer_main(["export-reviewed", "--out", str(out), "--database-url", url]) == 0
    assert "wrote 1 reviewed image(s)" in capsys.readouterr().out
    assert len(list((out / "Spiral Fracture").iterdir())) == 1
    assert trainer_main(["export-reviewed", "--out", str(out), "--database-url", url]) == 2
    assert "not empty" in capsys.readouterr().err


def test_export_without_a_database_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.delenv("BONEFRAC_DATABASE_URL", raising=False)
    monkeypatch.setenv("BONEFRAC_RECORDS_DIR", str(tmp_path / "nowhere"))
    assert trainer_main(["export-reviewed", "--out", str(tmp_path / "out")]) == 2
    assert "no records database" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_a_dicom_upload_is_kept_without_identifiers(start_app: Callable) -> None:
    client = start_app(store_images=True)
    records = client.app.state.records
    pixels = (np.arange(64 * 48).reshape(48, 64) % 251).astype(np.uint8) + 4
    ds = with_phi(image_dataset(pixels, InstitutionName="St Quokka", BodyPartExamined="HAND"))
    upload = write(ds)
    answer = _answer(client, "Quokkason_Ada.dcm", upload, "application/dicom")
    burned = write(with_phi(image_dataset(pixels + 1, BurnedInAnnotation="YES")))
    _answer(client, "b.dcm", burned, "application/dicom")
    assert records.log.flush(timeout=30)
    with Session(records.engine) as session:
        images = list(session.scalars(select(ImageRow)))
        row = session.get(PredictionRow, answer["prediction_id"])
    assert len(images) == 1  # the burned-in one is not kept
    [image] = images
    assert image.sha256 == hashlib.sha256(upload).hexdigest()  # keyed by what was sent
    kept = read(image.data)
    assert np.array_equal(kept.pixel_array, pixels)
    assert kept.BodyPartExamined == "HAND"
    assert kept.PatientIdentityRemoved == "YES"
    text = image.data.decode("latin-1") + str(row.answer) + str(row.filename)
    for secret in (*PHI_STRINGS, "St Quokka", "Quokkason"):
        assert secret not in text
    assert ds.SOPInstanceUID not in text


def test_a_real_radiograph_is_kept_decodable(start_app: Callable) -> None:
    client = start_app(store_images=True)
    records = client.app.state.records
    upload = write(with_phi(rg3()))
    _answer(client, "rg3.dcm", upload, "application/dicom")
    assert records.log.flush(timeout=60)
    with Session(records.engine) as session:
        [image] = list(session.scalars(select(ImageRow)))
    from modelio.images import decode

    assert decode(image.data).image.size == decode(upload).image.size
    text = image.data.decode("latin-1")
    assert not any(secret in text for secret in PHI_STRINGS)


def test_an_export_inside_a_base_dataset_adds_to_its_classes(
    start_app: Callable, tmp_path: Path
) -> None:
    """Exported into a copy of a Kaggle-layout dataset, the reviewed images join the
    classes of the same name (``trainer train --data`` on the copy learns from both)."""
    base = tmp_path / "base"
    for name in ("Avulsion fracture", "Spiral Fracture"):
        (base / name / "Train").mkdir(parents=True)
        (base / name / "Train" / "web.jpg").write_bytes(jpeg(128))
    client = start_app(store_images=True)
    answer = _answer(client, "a.png", png(BRIGHT))
    _review(client, answer, finding="fracture", fracture_type="Spiral Fracture")
    export_reviewed(base / "reviewed", client.app.state.records.url)
    index = discover(base)
    assert index.classes == ["Avulsion fracture", "Spiral Fracture"]
    spiral = [s.path.name for s in index.samples if s.class_name == "Spiral Fracture"]
    assert len(spiral) == 2
