"""Batched prediction with a Keras model, by output name (used by every stage that scores).

Its own module because training, cross-validation, assembly, the feature cache and the
experiments all need it, and none of them should import another to get it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelio import contract

#: Pixels per batch when predicting: a pretrained backbone at 352 px holds several
#: 176x176x144 float maps per image (twice with mirror averaging), and 64 images at once
#: took over 20 GB. About a million pixels per batch keeps it near 1-2 GB.
PIXELS_PER_BATCH = 1_000_000


def named_outputs(model: Any, images: Any) -> dict[str, Any]:
    """``{"probabilities": ...}``, plus every other named output of a multi-output model."""
    answer = model(images, training=False)
    return dict(answer) if isinstance(answer, dict) else {contract.PROBABILITIES: answer}


def predict_all(
    model: Any, images: np.ndarray, batch_size: int | None = None
) -> dict[str, np.ndarray]:
    """Every output of a Keras model by name, without ``model.predict``'s per-call overhead.

    A single-output model's answer is named ``probabilities``. The default batch size
    holds about :data:`PIXELS_PER_BATCH` pixels (64 images at most).
    """
    if batch_size is None:
        batch_size = max(1, min(64, PIXELS_PER_BATCH // max(1, images.shape[1] * images.shape[2])))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch_size):
        for name, value in named_outputs(model, images[start : start + batch_size]).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def predict(model: Any, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """A Keras model's probabilities (see :func:`predict_all`)."""
    if len(images) == 0:
        return np.zeros((0, 0), np.float32)
    return predict_all(model, images, batch_size)[contract.PROBABILITIES]
