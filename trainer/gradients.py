"""The fixed oriented-gradient stem, shared by the CNN (``stem="gradients"``) and the forest.

Nothing here is learned: raw pixels become per-cell histograms of oriented gradients
inside the graph, so a model built on them still takes raw pixels.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from modelio.images import InputSpec

if TYPE_CHECKING:
    from trainer.model import Hyperparameters


def gradient_features_model(spec: InputSpec, hparams: Hyperparameters) -> Any:
    """Raw pixels -> the flat oriented-gradient histograms a ``forest`` head is grown on."""
    import keras  # noqa: PLC0415

    inputs = keras.Input((spec.height, spec.width, spec.channels), name="images")
    return keras.Model(inputs, gradient_histograms(inputs, spec, hparams))


def gradient_histograms(inputs: Any, spec: InputSpec, hparams: Hyperparameters) -> Any:
    """A histogram-of-oriented-gradients front end, fixed (the dense head standardises it).

    Measured on the real training split (docs/experiments.md): from about 500 distinct
    images a CNN learns little from scratch, while a linear model on oriented-gradient
    histograms scores nearly twice its top-1. This stem computes those histograms in
    the graph (so the exported model still takes raw pixels) and leaves only the head to
    learn: per pixel, the gradient magnitude is shared softly among ``orientation_bins``
    unsigned orientations, averaged over ``gradient_cells`` x ``gradient_cells`` cells
    and L2-normalised per cell.
    """
    from keras import layers  # noqa: PLC0415

    cells = hparams.gradient_cells
    x = layers.Rescaling(1.0 / 255.0, name="scale_0_1")(inputs)
    x = OrientedGradients(hparams.orientation_bins, name="oriented_gradients")(x)
    # a side the cells do not divide leaves its last few rows or columns out
    x = layers.AveragePooling2D((spec.height // cells, spec.width // cells), name="cells")(x)
    x = CellNormalization(name="cell_norm")(x)
    return layers.Flatten(name="histograms")(x)


@functools.cache
def _gradient_layers() -> tuple[Any, Any]:
    """The two layer classes, built on first use so importing this module stays TF-free."""
    import keras  # noqa: PLC0415
    from keras import ops  # noqa: PLC0415

    @keras.saving.register_keras_serializable(package="bonefrac")
    class _OrientedGradients(keras.layers.Layer):
        """Gray image (N, H, W, C) in 0..1 -> (N, H, W, bins) soft orientation histograms.

        Central differences on the (reflect-padded) gray image give (gx, gy); each bin k
        gets ``|g| * relu(cos(2 (theta - theta_k)))^4``, written with cos 2theta and
        sin 2theta so that only multiplies and square roots reach the graph (TFLite
        has them all). No weights: nothing here is learned.
        """

        def __init__(self, bins: int = 9, **kwargs: Any) -> None:
            super().__init__(trainable=False, **kwargs)
            self.bins = bins

        def call(self, images: Any) -> Any:
            gray = ops.mean(images, axis=-1, keepdims=True)
            padded = ops.pad(gray, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
            gx = (padded[:, 1:-1, 2:, :] - padded[:, 1:-1, :-2, :]) * 0.5
            gy = (padded[:, 2:, 1:-1, :] - padded[:, :-2, 1:-1, :]) * 0.5
            squared = gx * gx + gy * gy
            magnitude = ops.sqrt(squared + 1e-12)
            cos2 = (gx * gx - gy * gy) / (squared + 1e-12)
            sin2 = 2.0 * gx * gy / (squared + 1e-12)
            angles = [2.0 * math.pi * k / self.bins for k in range(self.bins)]
            lobes = [ops.relu(cos2 * math.cos(a) + sin2 * math.sin(a)) for a in angles]
            return magnitude * ops.concatenate([lobe**4 for lobe in lobes], axis=-1)

        def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
            return (*input_shape[:-1], self.bins)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "bins": self.bins}

    @keras.saving.register_keras_serializable(package="bonefrac")
    class _CellNormalization(keras.layers.Layer):
        """Each cell's histogram divided by its length plus a floor, written out.

        Not ``UnitNormalization``: TFLite turns that into its L2_NORMALIZATION op, which
        returns NaN for an all-zero cell, and a blank image has nothing but those.
        """

        def __init__(self, floor: float = 1e-3, **kwargs: Any) -> None:
            super().__init__(trainable=False, **kwargs)
            self.floor = floor

        def call(self, histograms: Any) -> Any:
            length = ops.sqrt(ops.sum(histograms * histograms, axis=-1, keepdims=True))
            return histograms / (length + self.floor)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "floor": self.floor}

    return _OrientedGradients, _CellNormalization


def OrientedGradients(bins: int, **kwargs: Any) -> Any:  # noqa: N802 - reads as a layer
    """A fixed oriented-gradient layer (see ``_gradient_layers``)."""
    return _gradient_layers()[0](bins, **kwargs)


def CellNormalization(**kwargs: Any) -> Any:  # noqa: N802 - reads as a layer
    """Per-cell histogram normalisation that stays finite for empty cells."""
    return _gradient_layers()[1](**kwargs)
