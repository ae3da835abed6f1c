"""tf.data pipelines for the families trained by gradient descent (and the tuner)."""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer import data
from trainer.augment import AugmentConfig, make_augmenter
from trainer.config import TrainConfig


def make_datasets(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    *,
    weights: np.ndarray | None = None,
    augment: AugmentConfig | None = None,
    seed: int = 0,
) -> Any:
    """A batched tf.data pipeline of (pixels, one-hot, sample weight); augmented if asked."""
    import tensorflow as tf  # noqa: PLC0415

    one_hot = np.eye(num_classes, dtype=np.float32)[labels]
    sample_weights = np.ones(len(labels), np.float32) if weights is None else weights
    dataset = tf.data.Dataset.from_tensor_slices((images, one_hot, sample_weights))
    if augment is not None:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment is not None and augment.enabled:
        augmenter = make_augmenter(augment, seed)

        def apply(x: Any, y: Any, w: Any) -> tuple[Any, Any, Any]:
            return tf.clip_by_value(augmenter(x, training=True), 0.0, 255.0), y, w

        dataset = dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def balanced_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-sample weights that give every class the same total weight (imbalance)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    per_class = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return per_class[labels].astype(np.float32)


def training_datasets(
    config: TrainConfig, dataset: data.LoadedDataset, split: data.Split
) -> tuple[Any, Any]:
    """The augmented, class-balanced training pipeline and the plain validation one."""
    num_classes = len(dataset.classes)
    train_labels = dataset.labels[split.train]
    train_ds = make_datasets(
        dataset.images[split.train],
        train_labels,
        num_classes,
        config.batch_size,
        weights=balanced_weights(train_labels, num_classes),
        augment=config.augment,
        seed=config.seed,
    )
    val_ds = make_datasets(
        dataset.images[split.val], dataset.labels[split.val], num_classes, config.batch_size
    )
    return train_ds, val_ds
