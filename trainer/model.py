"""The CNN: a pure search space ``build_model(hp)`` and a plain ``make_model(...)`` factory.

The model takes raw pixels (float32, 0..255) and scales them itself, so every caller feeds
it the output of :func:`modelio.images.load_array` unchanged. Augmentation is *not*
part of the model: it lives in the training pipeline (:mod:`trainer.augment`), so the
exported graph is deterministic.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelio.images import InputSpec

if TYPE_CHECKING:
    from trainer.forest import ForestTables
    from trainer.heads import LinearHead, OodModel


@dataclass(frozen=True)
class Hyperparameters:
    """The tunable knobs, with the defaults used when no search is run."""

    stem: str = "conv"  # "conv": learned VGG blocks; "gradients": fixed oriented gradients
    # "dense": learned by gradient descent; "forest": extra trees on the "gradients" stem;
    # "linear": logistic regression on a registry backbone's frozen features (trainer.heads)
    head: str = "dense"
    filters: int = 16
    kernel_size: int = 3
    depth: int = 4
    convs_per_block: int = 2  # measured: two convs per block learn ~3x faster than one
    dense_units: int = 128
    # measured on the synthetic default, 6 runs each: with dropout 0.3 the 5-epoch CNN sat on
    # its chance-level loss plateau in 3 runs (8-19% top-1); with none it learned every time
    # (34-86%), and grouped CV on the real split did not change (13.4% vs 14.8%)
    dropout: float = 0.0
    learning_rate: float = 1e-3
    label_smoothing: float = 0.0
    gradient_cells: int = 8  # "gradients" stem: the image is pooled into cells x cells
    orientation_bins: int = 9  # "gradients" stem: unsigned orientations over 180 degrees
    # "forest" head: 100 trees scored 1-3 points below 300; leaf sizes 1-5 were within the
    # spread of each other, and 3 keeps the trees half the size (docs/experiments.md)
    forest_trees: int = 300
    forest_min_leaf: int = 3
    # registry backbones: which pooled feature maps feed the head ("head", "stage1".."stage7"),
    # and whether they are averaged with those of the mirrored image
    feature_taps: tuple[str, ...] = ("head",)
    feature_mirror: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULTS = Hyperparameters()
DEFAULT_SPEC = InputSpec(128, 128, 1)


def make_model(
    num_classes: int,
    spec: InputSpec,
    hparams: Hyperparameters = DEFAULTS,
    *,
    backbone: str | None = None,
    weights: Path | None = None,
) -> Any:
    """A compiled classifier ending in ``logits`` then a softmax named ``probabilities``.

    Without ``backbone``: VGG-style blocks (conv-BN-ReLU twice, pool), width doubling per
    block. With a registry ``backbone`` (:mod:`trainer.backbones`): its frozen ImageNet
    features. With a ``keras.applications`` name such as ``MobileNetV2``: that
    network, initialised from the local ``weights`` file when given (nothing is ever
    downloaded), under the same head.
    """
    import keras  # noqa: PLC0415 - keep TensorFlow out of module import
    from keras import layers  # noqa: PLC0415

    from trainer.backbones import feature_extractor, is_registered  # noqa: PLC0415

    inputs = keras.Input((spec.height, spec.width, spec.channels), name="images")
    if is_registered(backbone):  # frozen, pooled ImageNet features; the head is trained
        shape = (spec.height, spec.width, spec.channels)
        x = feature_extractor(
            str(backbone), shape, hparams.feature_taps, mirror=hparams.feature_mirror
        )(inputs)
    elif backbone:
        x = _backbone_features(inputs, spec, backbone, weights)
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    elif hparams.stem == "gradients":
        x = _gradient_histograms(inputs, spec, hparams)
        x = layers.BatchNormalization(name="standardise")(x)
    else:
        x = layers.Rescaling(1.0 / 255.0, name="scale_0_1")(inputs)
        for block in range(hparams.depth):
            width = min(hparams.filters * 2**block, 256)
            for conv in range(hparams.convs_per_block):
                x = layers.Conv2D(
                    width,
                    hparams.kernel_size,
                    padding="same",
                    use_bias=False,
                    name=f"conv{block}_{conv}",
                )(x)
                x = layers.BatchNormalization(momentum=0.9, name=f"bn{block}_{conv}")(x)
                x = layers.ReLU(name=f"relu{block}_{conv}")(x)
            x = layers.MaxPooling2D(name=f"pool{block}")(x)
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(hparams.dropout, name="dropout_features")(x)
    x = layers.Dense(hparams.dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(hparams.dropout, name="dropout_dense")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Softmax(name="probabilities")(logits)
    model = keras.Model(inputs, outputs, name="bone_fracture_cnn")
    compile_model(model, hparams, num_classes)
    return model


def make_forest_model(spec: InputSpec, hparams: Hyperparameters, forest: ForestTables) -> Any:
    """The fixed gradient stem under grown trees (``head="forest"``, :mod:`trainer.forest`).

    It ends like :func:`make_model` (``logits``, then ``probabilities``), so temperature
    scaling, export and serving treat both alike; nothing in it is trained by Keras.
    """
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    from trainer.forest import ForestVote  # noqa: PLC0415

    inputs = keras.Input((spec.height, spec.width, spec.channels), name="images")
    logits = ForestVote(forest, name="logits")(_gradient_histograms(inputs, spec, hparams))
    outputs = layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="bone_fracture_forest")


def make_pretrained_model(
    spec: InputSpec,
    backbone: str,
    hparams: Hyperparameters,
    head: LinearHead,
    *,
    ood: OodModel | None = None,
    temperature: float = 1.0,
) -> Any:
    """A frozen registry backbone under a fitted linear head (``head="linear"``).

    ``hparams`` says which features (``feature_taps``, ``feature_mirror``) feed the head.
    Outputs ``probabilities`` (the head's softmax, ``temperature`` folded into its
    weights), ``class_maps`` (where in the image the evidence for each class lies, see
    :func:`_class_maps`) and, with ``ood``, ``ood_score``: the features' distance from the
    training radiographs over the calibrated threshold, so above 1 means "unlike anything
    it learned from". Nothing in it is trained by Keras; the standardisation is folded
    into the ``logits`` layer.
    """
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    from trainer.backbones import feature_maps  # noqa: PLC0415

    inputs = keras.Input((spec.height, spec.width, spec.channels), name="images")
    shape = (spec.height, spec.width, spec.channels)
    taps = hparams.feature_taps
    maps = feature_maps(backbone, shape, taps, mirror=hparams.feature_mirror)(inputs)
    maps = maps if isinstance(maps, list) else [maps]
    pooled = [
        layers.GlobalAveragePooling2D(name=f"pool_{tap}")(m)
        for tap, m in zip(taps, maps, strict=True)
    ]
    features = pooled[0] if len(pooled) == 1 else layers.Concatenate(name="features")(pooled)
    dense = layers.Dense(len(head.bias), name="logits")
    logits = dense(features)
    kernel = (head.weights / head.scale[:, None] / temperature).astype("float32")
    bias = (head.bias - (head.mean / head.scale) @ head.weights) / temperature
    dense.set_weights([kernel, bias.astype("float32")])
    outputs = {
        "probabilities": layers.Softmax(name="probabilities")(logits),
        "class_maps": _class_maps(maps, taps, kernel),
    }
    if ood is not None:
        outputs["ood_score"] = OodScore(ood, name="ood_score")(features)
    return keras.Model(inputs, outputs, name=f"bone_fracture_{backbone.replace('-', '_')}")


def _class_maps(maps: list[Any], taps: tuple[str, ...], kernel: np.ndarray) -> Any:
    """Class activation maps of a linear head over pooled feature maps: ``(N, h, w, classes)``.

    The head's logit for class k, less its bias, is the average over positions of
    ``map(x, y) @ kernel_k`` (pooling is an average and the head is linear), so that
    product, position by position, splits it over the image exactly (Zhou et al.'s CAM;
    the bias, the same everywhere, is left out). Each tap's map is projected with its rows
    of the kernel and repeated up to the finest tap's grid: by an integer factor, which
    keeps the average, whenever the coarse grid divides the fine one (every recipe's
    size: 224 and 352 px); otherwise by nearest-neighbour resizing, whose average is close
    but not exact. The mean over classes is taken out of the kernel first: the softmax
    ignores what raises every class alike (the bone itself), so what is left is the
    evidence for one class *over the others*.
    """
    from keras import layers  # noqa: PLC0415

    contrast = kernel - kernel.mean(axis=1, keepdims=True)
    height = max(int(m.shape[1]) for m in maps)
    width = max(int(m.shape[2]) for m in maps)
    parts, row = [], 0
    for tap, feature_map in zip(taps, maps, strict=True):
        channels = int(feature_map.shape[-1])
        project = layers.Dense(contrast.shape[1], use_bias=False, name=f"class_map_{tap}")
        part = project(feature_map)
        project.set_weights([contrast[row : row + channels]])
        row += channels
        h, w = int(feature_map.shape[1]), int(feature_map.shape[2])
        if (h, w) != (height, width):
            if height % h == 0 and width % w == 0:
                part = layers.UpSampling2D((height // h, width // w), name=f"repeat_{tap}")(part)
            else:
                part = layers.Resizing(
                    height, width, interpolation="nearest", name=f"repeat_{tap}"
                )(part)
        parts.append(part)
    if len(parts) == 1:
        return layers.Identity(name="class_maps")(parts[0])
    return layers.Add(name="class_maps")(parts)


def gradient_features_model(spec: InputSpec, hparams: Hyperparameters) -> Any:
    """Raw pixels -> the flat oriented-gradient histograms a ``forest`` head is grown on."""
    import keras  # noqa: PLC0415

    inputs = keras.Input((spec.height, spec.width, spec.channels), name="images")
    return keras.Model(inputs, _gradient_histograms(inputs, spec, hparams))


def _gradient_histograms(inputs: Any, spec: InputSpec, hparams: Hyperparameters) -> Any:
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


@functools.cache
def _ood_layer() -> Any:
    """The layer class, built on first use so importing this module stays TF-free."""
    import keras  # noqa: PLC0415
    from keras import ops  # noqa: PLC0415

    @keras.saving.register_keras_serializable(package="bonefrac")
    class _OodScore(keras.layers.Layer):
        """Features (N, F) -> (N,) :meth:`trainer.heads.OodModel.distances` / threshold.

        Matrix products, squares and sums only (TFLite has them all); no trained weight.
        """

        def __init__(self, features: int, components: int, **kwargs: Any) -> None:
            super().__init__(trainable=False, **kwargs)
            self.features, self.components = features, components
            fixed = functools.partial(self.add_weight, initializer="zeros", trainable=False)
            self.mean = fixed((features,), name="mean")
            self.inverse_scale = fixed((features,), name="inverse_scale")
            self.basis = fixed((features, components), name="components")
            self.inverse_variance = fixed((components,), name="inverse_variance")
            self.residual = fixed((), name="residual_inverse_variance")
            self.inverse_threshold = fixed((), name="inverse_threshold")

        def fill(self, ood: OodModel) -> None:
            self.mean.assign(ood.mean.astype("float32"))
            self.inverse_scale.assign((1.0 / ood.scale).astype("float32"))
            self.basis.assign(ood.components.astype("float32"))
            self.inverse_variance.assign(ood.inverse_variance.astype("float32"))
            self.residual.assign(float(ood.residual_inverse_variance))
            self.inverse_threshold.assign(1.0 / float(ood.threshold))

        def call(self, features: Any) -> Any:
            z = (features - self.mean) * self.inverse_scale
            projected = ops.matmul(z, self.basis)
            squared = projected * projected
            inside = ops.sum(squared * self.inverse_variance, axis=-1)
            outside = ops.sum(z * z, axis=-1) - ops.sum(squared, axis=-1)
            distance = (inside + outside * self.residual) / float(self.features)
            return distance * self.inverse_threshold

        def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
            return (input_shape[0],)

        def get_config(self) -> dict[str, Any]:
            return {
                **super().get_config(),
                "features": self.features,
                "components": self.components,
            }

    return _OodScore


def OodScore(ood: OodModel, **kwargs: Any) -> Any:  # noqa: N802 - reads as a layer
    """A layer holding ``ood`` that scores features against the training distribution."""
    layer = _ood_layer()(int(ood.components.shape[0]), int(ood.components.shape[1]), **kwargs)
    layer.fill(ood)
    return layer


def OrientedGradients(bins: int, **kwargs: Any) -> Any:  # noqa: N802 - reads as a layer
    """A fixed oriented-gradient layer (see ``_gradient_layers``)."""
    return _gradient_layers()[0](bins, **kwargs)


def CellNormalization(**kwargs: Any) -> Any:  # noqa: N802 - reads as a layer
    """Per-cell histogram normalisation that stays finite for empty cells."""
    return _gradient_layers()[1](**kwargs)


def _backbone_features(inputs: Any, spec: InputSpec, name: str, weights: Path | None) -> Any:
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    from trainer.errors import TrainerError  # noqa: PLC0415

    factory = getattr(keras.applications, name, None)
    if factory is None or not callable(factory):
        raise TrainerError(f"unknown --backbone {name!r}; use a keras.applications name")
    if spec.channels != 3:
        raise TrainerError("a --backbone needs 3-channel input: add --rgb")
    if weights is not None and not Path(weights).is_file():
        raise TrainerError(f"--weights file {weights} does not exist")
    network = factory(include_top=False, weights=None, input_shape=(spec.height, spec.width, 3))
    if weights is not None:
        try:
            network.load_weights(str(weights))
        except (OSError, ValueError) as exc:
            raise TrainerError(f"cannot load --weights {weights}: {exc}") from exc
    # Fed pixels scaled to -1..1, the input range of MobileNet, ResNetV2 and Inception
    # weights; for applications trained on another range, check its preprocess_input.
    scaled = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_pm1")(inputs)
    return network(scaled)


def with_temperature(model: Any, temperature: float) -> Any:
    """The same network with its logits divided by ``temperature`` before the softmax."""
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    logits = model.get_layer("logits").output
    scaled = layers.Rescaling(1.0 / temperature, name="temperature")(logits)
    outputs = layers.Softmax(name="probabilities")(scaled)
    return keras.Model(model.input, outputs, name=model.name)


def logits_model(model: Any) -> Any:
    """A view of ``model`` that outputs its logits (for temperature scaling)."""
    import keras  # noqa: PLC0415

    return keras.Model(model.input, model.get_layer("logits").output)


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
        stem=hp.Choice("stem", ["conv", "gradients"], default=DEFAULTS.stem),
        filters=hp.Choice("filters", [16, 24, 32], default=DEFAULTS.filters),
        kernel_size=hp.Choice("kernel_size", [3, 5], default=DEFAULTS.kernel_size),
        depth=hp.Int("depth", 3, 5, default=DEFAULTS.depth),
        convs_per_block=hp.Int("convs_per_block", 1, 2, default=DEFAULTS.convs_per_block),
        dense_units=hp.Choice("dense_units", [64, 128, 256], default=DEFAULTS.dense_units),
        dropout=hp.Float("dropout", 0.0, 0.5, step=0.1, default=DEFAULTS.dropout),
        learning_rate=hp.Float(
            "learning_rate", 1e-4, 3e-3, sampling="log", default=DEFAULTS.learning_rate
        ),
        label_smoothing=hp.Choice("label_smoothing", [0.0, 0.1], default=DEFAULTS.label_smoothing),
    )


def build_model(hp: Any, *, num_classes: int = 10, spec: InputSpec = DEFAULT_SPEC) -> Any:
    """keras-tuner's search space: pure, so it can be smoke-tested with defaults."""
    return make_model(num_classes, spec, hparams_from_tuner(hp))
