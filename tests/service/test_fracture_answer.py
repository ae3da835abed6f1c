"""The fracture block: how a model's fracture outputs become the answer's first line.

A stand-in predictor returns chosen outputs, so each rule (the finding between the two
thresholds, boxes only when a fracture is possible, boxes in the pixels of the image as
shown, a model without fracture heads answering without the block) is checked exactly,
with no TensorFlow and no trained model. The trained heads are checked end to end in
``tests/trainer/test_fracture_training.py``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelio import contract
from modelio.images import InputSpec
from service.fracture import summary
from service.inference import Ranked, classify
from service.registry import LoadedModel, ModelRegistry, read_fracture_rules
from service.settings import Settings

RULES = {
    "rule_out": {"threshold": 0.2, "sensitivity": 0.95, "specificity": 0.55},
    "rule_in": {"threshold": 0.7, "sensitivity": 0.6, "specificity": 0.95},
    "region_threshold": 0.5,
    "measured_on": "held-out folds of grouped 5-fold cross-validation",
}
CLASSES = ("Oblique fracture", "Spiral Fracture")


class StandIn:
    """A predictor answering fixed outputs for every image."""

    runtime = "stand-in"
    input_shape = (32, 32, 1)

    def __init__(self, probability: float, fracture_map: np.ndarray | None) -> None:
        self.probability, self.fracture_map = probability, fracture_map

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        n = len(images)
        out = {contract.PROBABILITIES: np.tile([[0.3, 0.7]], (n, 1)).astype(np.float32)}
        out[contract.FRACTURE_PROBABILITY] = np.full(n, self.probability, np.float32)
        if self.fracture_map is not None:
            out[contract.FRACTURE_MAP] = np.stack([self.fracture_map] * n).astype(np.float32)
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)[contract.PROBABILITIES]


def loaded(predictor: StandIn, *, rules: bool = True) -> LoadedModel:
    metadata = {"name": "m", "version": 1, "classes": list(CLASSES), "input": {}}
    if rules:
        metadata["fracture"] = RULES
    return LoadedModel(
        name="m",
        version=1,
        path=Path("m/1"),
        metadata=metadata,
        classes=CLASSES,
        spec=InputSpec(32, 32, 1),
        predictor=predictor,  # type: ignore[arg-type]
        loaded_at=dt.datetime.now(dt.UTC),
        load_seconds=0.0,
        fracture_rules=read_fracture_rules(metadata, "m", 1),
    )


def png(width: int = 400, height: int = 300) -> bytes:
    buffer = io.BytesIO()
    ramp = np.linspace(40, 200, width, dtype=np.float32)[None, :].repeat(height, axis=0)
    Image.fromarray(ramp.astype(np.uint8), "L").save(buffer, "PNG")  # not blank
    return buffer.getvalue()


def answer(predictor: StandIn, *, rules: bool = True, data: bytes | None = None) -> Ranked:
    (result,) = classify(
        [data or png()],
        loaded(predictor, rules=rules),
        max_pixels=10**8,
        max_decode_bytes=2**30,
        confidence_threshold=0.5,
        colour_threshold=50.0,
    )
    assert isinstance(result, Ranked)
    return result


def lower_left_map() -> np.ndarray:
    fracture_map = np.zeros((22, 22), np.float32)
    fracture_map[11:22, 0:11] = 0.8
    return fracture_map


@pytest.mark.parametrize(
    ("probability", "finding"),
    [(0.05, "no_fracture"), (0.2, "uncertain"), (0.5, "uncertain"), (0.75, "fracture")],
)
def test_the_finding_follows_the_versions_thresholds(probability: float, finding: str) -> None:
    result = answer(StandIn(probability, lower_left_map()))
    assert result.fracture is not None
    assert result.fracture.finding == finding
    assert result.fracture.probability == pytest.approx(probability, abs=1e-4)


def test_boxes_are_in_the_pixels_of_the_image_as_shown() -> None:
    result = answer(StandIn(0.9, lower_left_map()), data=png(400, 300))
    assert result.fracture is not None
    assert result.fracture.image_size == (400, 300)
    (region,) = result.fracture.regions
    assert region.box == (0.0, 150.0, 200.0, 300.0)
    assert region.score == pytest.approx(0.8, abs=1e-4)


def test_no_fracture_gives_no_box_even_where_the_map_is_warm() -> None:
    result = answer(StandIn(0.05, lower_left_map()))
    assert result.fracture is not None
    assert result.fracture.regions == ()


def test_a_model_without_fracture_rules_answers_without_the_block() -> None:
    result = answer(StandIn(0.9, lower_left_map()), rules=False)
    assert result.fracture is None
    assert summary(result.fracture, result.label, result.confidence).startswith(
        "This model does not say whether a bone is broken"
    )


def test_the_summary_leads_with_the_finding_and_names_the_type_as_a_conditional() -> None:
    result = answer(StandIn(0.05, lower_left_map()))
    text = summary(result.fracture, result.label, result.confidence)
    assert text.startswith("No fracture seen (fracture probability 5%)")
    assert "if this is a fracture, its type is most likely Spiral Fracture (70%)" in text


def test_a_chest_dicom_is_warned_and_never_reads_no_fracture_seen() -> None:
    from support.dicom_samples import pydicom_data_file

    chest = pydicom_data_file("RG1_UNCR.dcm").read_bytes()
    result = answer(StandIn(0.05, lower_left_map()), data=chest)
    assert result.fracture is not None
    assert result.fracture.finding == "uncertain"  # 0.05 alone would be no_fracture
    assert "rules nothing out" in summary(result.fracture, result.label, result.confidence)
    assert result.dicom is not None
    assert result.dicom.body_part_examined == "CHEST"
    codes = [w.code for w in result.warnings]
    assert "unfamiliar_body_part" in codes
    message = next(w.message for w in result.warnings if w.code == "unfamiliar_body_part")
    assert "CHEST" in message


def test_a_limb_dicom_is_not_warned_for_its_body_part() -> None:
    from support.dicom_samples import pydicom_data_file, read, write

    ds = read(pydicom_data_file("RG1_UNCR.dcm").read_bytes())
    ds.BodyPartExamined = "HAND"
    result = answer(StandIn(0.3, lower_left_map()), data=write(ds))
    assert "unfamiliar_body_part" not in [w.code for w in result.warnings]


@pytest.mark.parametrize("probability", [float("nan"), 1.5, -0.1])
def test_an_output_that_is_no_probability_is_uncertain_without_boxes(probability: float) -> None:
    result = answer(StandIn(probability, lower_left_map()))
    assert result.fracture is not None
    assert result.fracture.finding == "uncertain"
    assert result.fracture.probability is None
    assert result.fracture.regions == ()


def test_a_foreign_map_shape_gives_no_box_and_no_error() -> None:
    result = answer(StandIn(0.9, np.full(22, 0.9, np.float32)))
    assert result.fracture is not None
    assert result.fracture.finding == "fracture"
    assert result.fracture.regions == ()


def test_map_values_above_one_are_clipped_to_a_probability() -> None:
    hot = lower_left_map() * 3.0
    result = answer(StandIn(0.9, hot))
    assert result.fracture is not None
    assert [r.score for r in result.fracture.regions] == [1.0]


def test_a_blank_image_is_warned_and_never_reads_no_fracture_seen() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((300, 400), 120, np.uint8), "L").save(buffer, "PNG")
    result = answer(StandIn(0.05, lower_left_map()), data=buffer.getvalue())
    assert "blank_image" in [w.code for w in result.warnings]
    assert result.fracture is not None
    assert result.fracture.finding == "uncertain"


def registry_over(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    fracture: object,
) -> ModelRegistry:
    """A registry over one version on disk whose runtime is the stand-in: metadata.json
    declares the fracture output, and ``fracture`` is its rules block (None: absent)."""
    folder = tmp_path / "models" / "bone-fracture" / "3"
    folder.mkdir(parents=True)
    metadata: dict[str, object] = {
        "name": "bone-fracture",
        "version": 3,
        "classes": list(CLASSES),
        "input": {"height": 32, "width": 32, "channels": 1},
        "outputs": contract.outputs_block(len(CLASSES), fracture=True),
    }
    if fracture is not None:
        metadata["fracture"] = fracture
    (folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    (folder / "model.tflite").write_bytes(b"")  # never opened: the stand-in runs instead
    predictor = StandIn(0.9, lower_left_map())
    monkeypatch.setattr("service.registry.load_predictor", lambda *_a, **_k: predictor)
    return ModelRegistry(make_settings(tmp_path / "models"))


@pytest.mark.parametrize("fracture", [None, {"rule_in": RULES["rule_in"]}, "0.5"])
def test_a_version_with_a_fracture_output_but_no_readable_rules_is_warned_at_load(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fracture: object,
) -> None:
    registry = registry_over(tmp_path, make_settings, monkeypatch, fracture)
    with caplog.at_level(logging.INFO, logger="service.registry"):
        model = registry.refresh()
    assert model is not None
    assert model.fracture_rules is None
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "version 3 of bone-fracture" in warning.getMessage()
    assert "'fracture' rules" in warning.getMessage()


def test_rules_are_read_once_at_load_not_per_request(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = registry_over(tmp_path, make_settings, monkeypatch, RULES)
    with caplog.at_level(logging.WARNING, logger="service.registry"):
        model = registry.refresh()
    assert model is not None
    assert not caplog.records  # readable rules: nothing to warn about

    def parsed_again(_metadata: object) -> None:
        raise AssertionError("fracture rules parsed per request")

    monkeypatch.setattr(contract.FractureRules, "from_metadata", parsed_again)
    (result,) = classify(
        [png()],
        model,
        max_pixels=10**8,
        max_decode_bytes=2**30,
        confidence_threshold=0.5,
        colour_threshold=50.0,
    )
    assert isinstance(result, Ranked)
    assert result.fracture is not None
    assert result.fracture.finding == "fracture"
