"""The CNN: a pure search space ``build_model(hp)`` and a plain ``make_model(...)`` factory.

The model takes raw pixels (float32, 0..255) and scales them itself, so every caller feeds
it the output of :func:`trainer.preprocessing.load_array` unchanged. Augmentation is *not*
part of the model: it lives in the training pipeline (:mod:`trainer.augment`), so the
exported graph is deterministic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trainer.preprocessing import InputSpec


@dataclass(frozen=True)
class Hyperparameters:
    """The tunable knobs, with the defaults used when no search is run."""

    filters: int = 32
    kernel_size: int = 3
    depth: int = 4
    dense_units: int = 128
    dropout: float = 0.3
    learning_rate: float = 1e-3
    label_smoothing: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULTS = Hyperparameters()
DEFAULT_SPEC = InputSpec(128, 128, 1)


def make_model(num_classes: int, spec: InputSpec, hparams: Hyperparameters = DEFAULTS) -> Any:
    """A compiled CNN: conv blocks (conv-BN-ReLU, pool) whose width doubles per block."""
    import keras  # noqa: PLC0415 - keep TensorFlow out of module import
    from keras import layers  # noqa: PLC0415

    inputs = keras.Input((spec.height, spec.width, spec.channels), name="images")
    x = layers.Rescaling(1.0 / 255.0, name="scale_0_1")(inputs)
    for block in range(hparams.depth):
        width = min(hparams.filters * 2**block, 256)
        x = layers.Conv2D(
            width, hparams.kernel_size, padding="same", use_bias=False, name=f"conv{block}"
        )(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        x = layers.MaxPooling2D(name=f"pool{block}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(hparams.dropout, name="dropout_features")(x)
    x = layers.Dense(hparams.dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(hparams.dropout, name="dropout_dense")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="bone_fracture_cnn")
    compile_model(model, hparams, num_classes)
    return model


def compile_model(model: Any, hparams: Hyperparameters, num_classes: int) -> None:
    import keras  # noqa: PLC0415

    model.compile(
        optimizer=keras.optimizers.Adam(hparams.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=hparams.label_smoothing),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=min(3, num_classes), name="top3"),
        ],
    )


def hparams_from_tuner(hp: Any) -> Hyperparameters:
    """Declare the search space on a keras-tuner ``HyperParameters`` and read it back."""
    return Hyperparameters(
        filters=hp.Choice("filters", [16, 32, 48], default=DEFAULTS.filters),
        kernel_size=hp.Choice("kernel_size", [3, 5], default=DEFAULTS.kernel_size),
        depth=hp.Int("depth", 3, 5, default=DEFAULTS.depth),
        dense_units=hp.Choice("dense_units", [64, 128, 256], default=DEFAULTS.dense_units),
        dropout=hp.Float("dropout", 0.1, 0.5, step=0.1, default=DEFAULTS.dropout),
        learning_rate=hp.Float(
            "learning_rate", 1e-4, 3e-3, sampling="log", default=DEFAULTS.learning_rate
        ),
        label_smoothing=hp.Choice("label_smoothing", [0.0, 0.1], default=DEFAULTS.label_smoothing),
    )


def build_model(hp: Any, *, num_classes: int = 10, spec: InputSpec = DEFAULT_SPEC) -> Any:
    """keras-tuner's search space: pure, so it can be smoke-tested with defaults."""
    return make_model(num_classes, spec, hparams_from_tuner(hp))
