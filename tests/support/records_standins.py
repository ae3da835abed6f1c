"""The records tests' stand-ins: small encoded images (distinct bytes, distinct answers)
and a model that needs no TensorFlow and no export (the records do not care what
computed the probabilities)."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import numpy as np
from PIL import Image

from modelio.images import InputSpec
from service.registry import LoadedModel, read_fracture_rules


def _checker(level: int, size: tuple[int, int]) -> np.ndarray:
    """Gray ``level`` with a fine +-8 checkerboard: its mean is ``level``, and it is not
    the uniform frame the service warns about as ``blank_image``."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    pattern = np.where((xs // 4 + ys // 4) % 2 == 0, 8, -8)
    return np.clip(level + pattern, 0, 255).astype(np.uint8)


def png(level: int, size: tuple[int, int] = (32, 24)) -> bytes:
    """A gray PNG: ``level`` 0..255 sets the stand-in model's answer."""
    out = io.BytesIO()
    Image.fromarray(_checker(level, size), "L").save(out, format="PNG")
    return out.getvalue()


def jpeg(level: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (level, level, level)).save(out, format="JPEG")
    return out.getvalue()


CLASSES = ("Avulsion fracture", "Comminuted fracture", "Greenstick fracture", "Spiral Fracture")
MODEL_NAME = "bone-fracture"
#: metadata.fracture of the stand-in: below 0.3 no_fracture, from 0.7 fracture.
RULES = {
    "rule_out": {"threshold": 0.3, "sensitivity": 0.95, "specificity": 0.5},
    "rule_in": {"threshold": 0.7, "sensitivity": 0.6, "specificity": 0.95},
    "region_threshold": 0.5,
    "measured_on": "stand-in",
}


class StandInPredictor:
    """Outputs from the image's mean brightness: different images, different answers; a
    bright image is a fracture (from 0.7 * 255), a dark one none (below 0.3 * 255) and
    unfamiliar (below 30)."""

    runtime = "stand-in"
    input_shape = (16, 16, 1)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        means = images.reshape(len(images), -1).mean(axis=1) / 255.0
        logits = np.stack([means * (i + 1) * 4 for i in range(len(CLASSES))], axis=1)
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        ood = np.where(means < 30 / 255.0, 2.5, 0.3).astype(np.float32)
        return {
            "probabilities": probabilities.astype(np.float32),
            "ood_score": ood,
            "fracture_probability": means.astype(np.float32),  # bright: a fracture
        }

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)["probabilities"]


def stand_in_model(version: int = 1) -> LoadedModel:
    metadata = {"classes": list(CLASSES), "trained_on": "stand-in", "fracture": RULES}
    return LoadedModel(
        name=MODEL_NAME,
        version=version,
        path=Path("models") / MODEL_NAME / str(version),
        metadata=metadata,
        classes=CLASSES,
        spec=InputSpec(16, 16, 1),
        predictor=StandInPredictor(),
        loaded_at=dt.datetime.now(dt.UTC),
        load_seconds=0.0,
        fracture_rules=read_fracture_rules(metadata, MODEL_NAME, version),
    )
