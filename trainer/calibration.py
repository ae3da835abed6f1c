"""Temperature scaling (Guo et al., 2017) and the expected calibration error.

A network trained on a few hundred radiographs is over-confident: a reported 0.9 is right
far less than 90% of the time. Dividing the logits by one temperature fitted on the
validation split keeps every ranking (accuracy and top-3 are unchanged) and makes the
service's confidence, and its low-confidence warning, mean what they say.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

RELIABILITY_DIAGRAM = "reliability_diagram.png"


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, numerically stable."""
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean NLL of the true labels at this temperature: what the fit minimises."""
    probabilities = softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(probabilities, 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising the NLL of ``labels`` (bounded 1-D search)."""
    from scipy.optimize import minimize_scalar  # noqa: PLC0415

    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(result.x))


def reliability(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 10
) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error of the top label, and the per-bin table behind it."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    table, ece = [], 0.0
    for low, high in itertools.pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if not inside.any():
            continue
        accuracy, mean_confidence = float(correct[inside].mean()), float(confidence[inside].mean())
        ece += inside.mean() * abs(accuracy - mean_confidence)
        table.append(
            {
                "low": float(low),
                "high": float(high),
                "count": int(inside.sum()),
                "accuracy": accuracy,
                "confidence": mean_confidence,
            }
        )
    return float(ece), table


def plot_reliability(
    path: Path, before: list[dict[str, float]], after: list[dict[str, float]], title: str
) -> None:
    """Accuracy against confidence per bin, before and after temperature scaling."""
    from trainer.evaluate import pyplot  # noqa: PLC0415

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    for table, label in ((before, "raw softmax"), (after, "temperature scaled")):
        if table:
            ax.plot(
                [row["confidence"] for row in table],
                [row["accuracy"] for row in table],
                marker="o",
                label=label,
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean confidence in bin")
    ax.set_ylabel("accuracy in bin")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
