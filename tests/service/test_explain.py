"""Explanations: the heatmap drawn from a model's class maps, and whether it points at the sign.

The behavioural test trains a small pretrained-backbone model on synthetic radiographs,
whose generator knows where it drew each fracture sign, and checks that the heatmap's
peak lands on the sign far more often than a random point would.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.dicom_samples import pydicom_data_file
from support.sample_images import encode, upload

from service.explain import heatmap, heatmap_png

# ------------------------------------------------------------------------ the heatmap


def test_heatmap_keeps_the_images_orientation_and_aspect_ratio() -> None:
    """Evidence in the grid's top-right cell lights the top-right of a wide image (a
    transposed or mirrored map would light another corner)."""
    grid = np.zeros((3, 5), np.float32)
    grid[0, 4] = 3.0
    out = heatmap(grid, (800, 400))
    assert out.shape == (256, 512)  # (height, width), longer side capped at 512
    assert out.dtype == np.uint8
    assert out.max() == 255
    y, x = np.unravel_index(int(np.argmax(out)), out.shape)
    assert y < out.shape[0] / 3
    assert x > out.shape[1] * 4 / 5
    assert out[-1, 0] == 0
    assert heatmap(grid, (30, 90)).shape == (90, 30)  # a small image keeps its size


def test_negative_and_missing_evidence_is_zero() -> None:
    grid = np.array([[-2.0, -1.0], [np.nan, -0.5]], np.float32)
    assert not heatmap(grid, (64, 64)).any()
    grid[1, 1] = 0.5
    out = heatmap(grid, (64, 64))
    assert out.max() == 255
    assert out[0, 0] == 0


def test_heatmap_png_is_an_8_bit_gray_png() -> None:
    grid = np.arange(12, dtype=np.float32).reshape(3, 4)
    image = Image.open(io.BytesIO(base64.b64decode(heatmap_png(grid, (100, 75)))))
    assert image.format == "PNG"
    assert image.mode == "L"
    assert image.size == (100, 75)


# ------------------------------------------------------------------------ the API


def decoded_heatmap(explanation: dict) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(explanation["heatmap_png"])))
    assert image.format == "PNG"
    assert image.mode == "L"
    return image


def test_predict_without_explain_has_no_explanation(client, png) -> None:
    body = client.post("/predict", files=upload(png)).json()
    assert body["explanation"] is None
    assert "no_explanation" not in {w["code"] for w in body["warnings"]}


def test_maps_of_the_wrong_shape_are_no_explanation_not_an_error() -> None:
    from service.inference import explained, rank

    ranked = rank(
        np.array([0.6, 0.4]),
        ("a", "b"),
        colour=0.0,
        confidence_threshold=0.0,
        colour_threshold=100.0,
    )
    for maps in (np.zeros((4, 4, 3), np.float32), np.zeros((4, 2), np.float32)):
        answer = explained(ranked, maps, ("a", "b"), (64, 64))
        assert answer.explanation is None
        assert [w.code for w in answer.warnings] == ["no_explanation"]
    good = explained(ranked, np.ones((4, 4, 2), np.float32), ("a", "b"), (64, 32))
    assert good.explanation is not None
    assert good.explanation.label == "a"


def test_a_model_without_class_maps_says_it_cannot_explain(client, png) -> None:
    """The tiny CNN has no class maps: the answer still comes, with a warning."""
    response = client.post("/predict?explain=true", files=upload(png))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["explanation"] is None
    [warning] = [w for w in body["warnings"] if w["code"] == "no_explanation"]
    assert "exports no class maps" in warning["message"]


def test_explain_must_be_a_boolean(client, png) -> None:
    response = client.post("/predict?explain=perhaps", files=upload(png))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert "explain" in response.json()["error"]["message"]


def _rotated_jpeg(size: tuple[int, int]) -> bytes:
    """A JPEG stored ``size`` (w, h) with EXIF orientation 6: shown rotated, (h, w)."""
    image = Image.open(io.BytesIO(encode("PNG", "L", size=size)))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.slow
def test_shipped_model_explains_its_label_in_the_image_as_shown(serve, shipped_models_dir) -> None:
    client = serve(shipped_models_dir)
    response = client.post("/predict?explain=true", files=upload(_rotated_jpeg((300, 120))))
    assert response.status_code == 200, response.text
    body = response.json()
    explanation = body["explanation"]
    assert explanation["method"] == "class-activation-map"
    assert explanation["label"] == body["label"]
    assert decoded_heatmap(explanation).size == (120, 300)  # upright, as the user sees it
    assert "no_explanation" not in {w["code"] for w in body["warnings"]}


@pytest.mark.slow
def test_batch_explains_every_good_file_and_dicom_as_decoded(serve, shipped_models_dir) -> None:
    client = serve(shipped_models_dir)
    dicom = pydicom_data_file("RG3_UNCR.dcm").read_bytes()  # 1760 px high, MONOCHROME1
    files = [
        ("files", ("a.png", encode("PNG", "L", size=(200, 100)), "image/png")),
        ("files", ("broken.png", b"\x89PNG\r\n\x1a\n broken", "image/png")),
        ("files", ("leg.dcm", dicom, "application/dicom")),
    ]
    response = client.post("/predict/batch?explain=true", files=files)
    assert response.status_code == 200, response.text
    first, broken, leg = response.json()["results"]
    assert decoded_heatmap(first["prediction"]["explanation"]).size == (200, 100)
    assert broken["error"] is not None
    prediction = leg["prediction"]
    columns, rows = prediction["dicom"]["columns"], prediction["dicom"]["rows"]
    width, height = decoded_heatmap(prediction["explanation"]).size
    assert max(width, height) == 512
    assert width / height == pytest.approx(columns / rows, rel=0.01)
    assert prediction["explanation"]["label"] == prediction["label"]


# ------------------------------------------------------------- behaviour on synthetics

#: Fresh test images per class (never seen in training), and the size they are drawn at.
PER_CLASS = 8
SIZE = 224


@pytest.fixture(scope="module")
def synthetic_explainer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``--recipe pretrained-lite0-stages`` on 20 synthetic radiographs per class."""
    from trainer.cli import main
    from trainer.synth import write_dataset

    root = tmp_path_factory.mktemp("explainer")
    write_dataset(root / "data", per_class=20, size=SIZE, seed=0)
    args = ["--data", str(root / "data"), "--models", str(root / "models"), "--quiet"]
    assert main(["train", *args, "--recipe", "pretrained-lite0-stages"]) == 0
    return root / "models" / "bone-fracture" / "1"


def _grown(region: np.ndarray, radius: tuple[int, int]) -> np.ndarray:
    """The region grown by ``radius`` pixels (rows, columns): a grid cell's centre may sit
    half a cell away from a thin crack it covers."""
    ry, rx = radius
    padded = np.pad(region, ((ry, ry), (rx, rx)))
    grown = np.zeros_like(region)
    for dy in range(2 * ry + 1):
        for dx in range(2 * rx + 1):
            grown |= padded[dy : dy + region.shape[0], dx : dx + region.shape[1]]
    return grown


@pytest.mark.slow
def test_heatmap_peak_falls_on_the_drawn_fracture_sign(synthetic_explainer: Path) -> None:
    """Measured: the peak lands on the sign (grown by half a grid cell) in 75% of 80 fresh
    images, where a random point would in 16% (the grown regions' mean area)."""
    from modelio.images import InputSpec, to_array
    from service.runtime import load_predictor
    from trainer.synth import CLASS_NAMES, render_with_sign

    metadata = json.loads((synthetic_explainer / "metadata.json").read_text())
    spec = InputSpec.from_dict(metadata["input"])
    predictor = load_predictor(synthetic_explainer, runtime="tflite")
    hits, chance = [], []
    for k, name in enumerate(CLASS_NAMES):
        for i in range(PER_CLASS):
            image, region = render_with_sign(name, np.random.default_rng([99, k, i]), SIZE)
            maps = predictor.run(to_array(image, spec)[np.newaxis])["class_maps"][0, :, :, k]
            heat = heatmap(maps, image.size)
            assert heat.shape == region.shape
            cell = (region.shape[0] // maps.shape[0], region.shape[1] // maps.shape[1])
            target = _grown(region, (cell[0] // 2, cell[1] // 2))
            y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
            hits.append(bool(target[y, x]))
            chance.append(float(target.mean()))
    rate, baseline = float(np.mean(hits)), float(np.mean(chance))
    print(f"heatmap peak on the sign: {rate:.0%} of {len(hits)}; chance {baseline:.0%}")
    assert rate >= 0.5
    assert rate >= 2.5 * baseline
