"""Metrics (scikit-learn) and report files (matplotlib) for held-out predictions."""

from __future__ import annotations

import json
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

CLASSIFICATION_REPORT = "classification_report.json"
CONFUSION_MATRIX = "confusion_matrix.png"
TRAINING_CURVES = "training_curves.png"


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (training machines have no screen)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def compute_metrics(
    labels: np.ndarray, probabilities: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, top-3 accuracy, macro-F1, per-class precision/recall and the confusion matrix."""
    from sklearn.exceptions import UndefinedMetricWarning  # noqa: PLC0415
    from sklearn.metrics import (  # noqa: PLC0415
        accuracy_score,
        classification_report,
        confusion_matrix,
        f1_score,
        top_k_accuracy_score,
    )

    everything = list(range(len(classes)))
    predicted = probabilities.argmax(axis=1)
    with warnings.catch_warnings():  # with 3 classes or fewer top-3 is 1: no sklearn warning
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        top3 = top_k_accuracy_score(
            labels, probabilities, k=min(3, len(classes)), labels=everything
        )
    report = classification_report(
        labels,
        predicted,
        labels=everything,
        target_names=classes,
        output_dict=True,
        zero_division=0,
    )
    return {
        "samples": len(labels),
        "accuracy": float(accuracy_score(labels, predicted)),
        "top3_accuracy": float(top3),
        "macro_f1": float(
            f1_score(labels, predicted, labels=everything, average="macro", zero_division=0)
        ),
        "per_class": {
            name: {
                "precision": float(report[name]["precision"]),
                "recall": float(report[name]["recall"]),
                "f1": float(report[name]["f1-score"]),
                "support": int(report[name]["support"]),
            }
            for name in classes
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=everything).tolist(),
    }


def format_metrics(metrics: dict[str, Any]) -> str:
    """A short table for the terminal."""
    lines = [
        f"samples {metrics['samples']}  accuracy {metrics['accuracy']:.3f}  "
        f"top-3 {metrics['top3_accuracy']:.3f}  macro-F1 {metrics['macro_f1']:.3f}",
        f"{'class':<26}{'precision':>10}{'recall':>10}{'support':>9}",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"{name:<26}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['support']:>9d}"
        )
    return "\n".join(lines)


def write_reports(
    out_dir: Path,
    metrics: dict[str, Any],
    classes: list[str],
    history: dict[str, list[float]] | None,
) -> None:
    """``classification_report.json``, ``confusion_matrix.png`` and ``training_curves.png``."""
    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CLASSIFICATION_REPORT).write_text(
        json.dumps({"classes": classes, **metrics}, indent=2) + "\n", encoding="utf-8"
    )

    matrix = np.array(metrics["confusion_matrix"])
    size = max(6.0, 0.6 * len(classes))
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (n={metrics['samples']}, accuracy {metrics['accuracy']:.2f})")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(
            col,
            row,
            str(value),
            ha="center",
            va="center",
            color="white" if value > threshold else "black",
            fontsize=8,
        )
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out_dir / CONFUSION_MATRIX, dpi=100)
    plt.close(fig)

    if history:
        _plot_history(plt, history, out_dir / TRAINING_CURVES)


def _plot_history(plt: Any, history: dict[str, list[float]], path: Path) -> None:
    panels = [name for name in ("loss", "accuracy", "top3") if name in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, name in zip(axes[0], panels, strict=True):
        epochs = range(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports_atomically(target: Path, metrics: dict[str, Any], classes: list[str]) -> None:
    """Write the reports beside ``target``, then swap them in: a failure (full disk,
    Ctrl-C) leaves the previous reports, never a half-written mix, inside a version."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:12]}")
    try:
        write_reports(staging, metrics, classes, history=None)
        previous = target.with_name(f".{target.name}.previous-{uuid.uuid4().hex[:12]}")
        if target.exists():
            target.rename(previous)
        staging.rename(target)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def evaluate_version(
    model_dir: Path, data_dir: Path, *, split: str = "auto", out_dir: Path | None = None
) -> dict[str, Any]:
    """Score an exported version (its SavedModel, as served) on a labelled folder.

    ``split``: ``test`` uses only images in test folders, ``all`` every image, ``auto`` the
    test folders when the data has any. Class folders are matched to the model's classes
    ignoring case; a class the model does not know is an error.
    """
    from modelio import artifact, contract  # noqa: PLC0415
    from modelio.images import InputSpec  # noqa: PLC0415
    from trainer import data  # noqa: PLC0415
    from trainer.errors import TrainerError  # noqa: PLC0415

    try:
        metadata = artifact.check_version(model_dir)
    except artifact.ArtifactError as exc:
        raise TrainerError(f"not a model version: {exc}") from exc
    if not (Path(model_dir) / artifact.SAVED_MODEL_FILE).is_file():
        raise TrainerError(f"{model_dir} has no {artifact.SAVED_MODEL_FILE} to evaluate")
    index = data.discover(data_dir)
    import tensorflow as tf  # noqa: PLC0415 - only now: its start-up takes seconds

    classes: list[str] = metadata["classes"]
    dataset = data.load(index, InputSpec.from_dict(metadata["input"]))
    lookup = {name.casefold(): number for number, name in enumerate(classes)}
    unknown = [name for name in dataset.classes if name.casefold() not in lookup]
    if unknown:
        raise TrainerError(f"the model does not know the classes {', '.join(unknown)}")
    labels = np.array([lookup[dataset.classes[label].casefold()] for label in dataset.labels])
    in_test = np.array([hint == "test" for hint in dataset.split_hints])
    if split == "test" and not in_test.any():
        raise TrainerError(f"{data_dir} has no test folders; use --split all")
    use_test = split == "test" or (split == "auto" and in_test.any())
    rows = np.flatnonzero(in_test) if use_test else np.arange(len(labels))

    signature = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    probabilities = np.concatenate(
        [
            signature(images=tf.constant(dataset.images[rows[start : start + 64]]))[
                contract.PROBABILITIES
            ].numpy()
            for start in range(0, len(rows), 64)
        ]
    )
    metrics = compute_metrics(labels[rows], probabilities, classes)
    target = Path(out_dir) if out_dir else Path(model_dir) / "reports" / "evaluation"
    write_reports_atomically(target, metrics, classes)
    return {
        "model": metadata["name"],
        "version": metadata["version"],
        "data": str(data_dir),
        "split": "test" if use_test else "all",
        "skipped_files": len(dataset.skipped),
        **metrics,
        "reports_dir": str(target),
    }
