"""Detection folders: which folder means fractured, and the outlines on the model's grid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelio.images import InputSpec
from trainer import data, synth
from trainer.detection_data import (
    detection_role,
    find_coco,
    fractured_labels,
    is_detection_layout,
    load_outlines,
)
from trainer.errors import TrainerError


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("Fractured", 1),
        ("fracture", 1),
        ("Non_fractured", 0),
        ("not fractured", 0),
        ("Normal", 0),
        ("NEGATIVE", 0),
        ("Spiral Fracture", None),
    ],
)
def test_folder_names_in_their_usual_spellings(name: str, role: int | None) -> None:
    assert detection_role(name) == role


def test_a_type_folder_set_is_not_a_detection_layout() -> None:
    assert is_detection_layout(["Fractured", "Non_fractured"])
    assert is_detection_layout(["normal", "fracture"])
    assert not is_detection_layout(["Fractured", "Broken"])
    assert not is_detection_layout(["Spiral Fracture", "Oblique fracture"])


def test_the_synthetic_detection_set_loads_with_labels_and_outlines(tmp_path: Path) -> None:
    root = tmp_path / "det"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "synth",
            "--out",
            str(root),
            "--per-class",
            "6",
            "--size",
            "96",
            "--detection",
        ],
        check=True,
        capture_output=True,
    )
    dataset = data.load(data.discover(root), InputSpec(64, 64, 1))
    fractured = fractured_labels(dataset)
    assert fractured.sum() == 6
    assert (fractured == 0).sum() == 6
    coco = find_coco(root)
    assert coco is not None
    assert len(json.loads(coco.read_text())["annotations"]) == 6
    outlines = load_outlines(coco, dataset.paths, (8, 8))
    assert outlines.outlined.tolist() == (fractured == 1).tolist()
    assert np.all(outlines.coverage[fractured == 0] == 0)
    assert np.all(outlines.coverage[fractured == 1].max(axis=(1, 2)) > 0)
    for boxes, broken in zip(outlines.boxes, fractured, strict=True):
        assert len(boxes) == int(broken)
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= 1
            assert 0 <= y0 < y1 <= 1


def test_a_type_folder_is_refused_as_fracture_data(tmp_path: Path) -> None:
    synth.write_dataset(tmp_path / "types", per_class=2, size=48)
    dataset = data.load(data.discover(tmp_path / "types"), InputSpec(32, 32, 1))
    with pytest.raises(TrainerError, match="one for fractured and one for intact"):
        fractured_labels(dataset)


def test_an_unreadable_coco_file_is_a_one_line_error(tmp_path: Path) -> None:
    broken = tmp_path / "x.coco.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(TrainerError, match="not a readable COCO annotation file"):
        load_outlines(broken, ["a.jpg"], (4, 4))
