"""Temperature scaling recovers a known temperature and lowers the calibration error."""

from __future__ import annotations

import numpy as np

from trainer import calibration


def overconfident_logits(temperature: float, samples: int = 4000, classes: int = 5):
    """Labels drawn from softmax(z); the model reports z * temperature (over-confident)."""
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, (samples, classes))
    probabilities = calibration.softmax(true_logits)
    labels = np.array([rng.choice(classes, p=row) for row in probabilities])
    return true_logits * temperature, labels


def test_fit_recovers_the_temperature() -> None:
    logits, labels = overconfident_logits(3.0)
    assert abs(calibration.fit_temperature(logits, labels) - 3.0) < 0.3


def test_scaling_lowers_ece_and_keeps_the_ranking() -> None:
    logits, labels = overconfident_logits(3.0)
    temperature = calibration.fit_temperature(logits, labels)
    raw, scaled = calibration.softmax(logits), calibration.softmax(logits, temperature)
    ece_raw, _ = calibration.reliability(raw, labels)
    ece_scaled, table = calibration.reliability(scaled, labels)
    assert ece_scaled < ece_raw / 3
    np.testing.assert_array_equal(raw.argmax(axis=1), scaled.argmax(axis=1))
    assert sum(row["count"] for row in table) == len(labels)


def test_perfectly_calibrated_has_small_ece() -> None:
    logits, labels = overconfident_logits(1.0)
    ece, _ = calibration.reliability(calibration.softmax(logits), labels)
    assert ece < 0.03
