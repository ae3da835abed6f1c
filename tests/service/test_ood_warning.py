"""The out-of-distribution warning: the model's ``ood_score`` output, read by the service."""

from __future__ import annotations

import numpy as np
import pytest

from service.inference import rank

CLASSES = ("a", "b", "c")
SETTINGS = {"colour": 0.0, "confidence_threshold": 0.0, "colour_threshold": 100.0}


def codes(ood_score: float | None) -> set[str]:
    ranked = rank(np.array([0.7, 0.2, 0.1]), CLASSES, ood_score=ood_score, **SETTINGS)
    return {w.code for w in ranked.warnings}


@pytest.mark.parametrize(("score", "warned"), [(0.3, False), (1.0, False), (1.01, True)])
def test_a_score_above_one_warns_that_the_image_is_unfamiliar(score: float, warned: bool):
    assert ("unfamiliar_image" in codes(score)) == warned


def test_a_nan_score_is_treated_as_unfamiliar_and_no_score_means_no_check():
    assert "unfamiliar_image" in codes(float("nan"))
    assert codes(None) == set()
    ranked = rank(np.array([0.7, 0.2, 0.1]), CLASSES, ood_score=None, **SETTINGS)
    assert ranked.ood_score is None


def test_the_warning_says_how_far_and_what_it_means():
    ranked = rank(np.array([0.7, 0.2, 0.1]), CLASSES, ood_score=3.25, **SETTINGS)
    (warning,) = ranked.warnings
    assert "3.2x" in warning.message
    assert "unlike the radiographs the model was trained on" in warning.message
    assert ranked.ood_score == 3.25


def test_predict_carries_the_score_of_a_model_that_has_one(serve, tiny_models_dir, png):
    """The tiny CNN has no OOD output: the field is null and no warning is invented."""
    client = serve(tiny_models_dir)
    body = client.post("/predict", files={"file": ("x.png", png, "image/png")}).json()
    assert body["ood_score"] is None
    assert "unfamiliar_image" not in {w["code"] for w in body["warnings"]}
    assert "synthetic drawings" in body["trained_on"]
