"""The CNN family (``head="dense"``): a dense head learned by gradient descent.

Under the head sits one of: VGG-style blocks (the default), the fixed oriented-gradient
stem (``stem="gradients"``, :mod:`trainer.gradients`), a registry backbone's frozen
pooled features, or a ``keras.applications`` network. ``build_model(hp)`` is the pure
keras-tuner search space; ``make_model(...)`` the plain factory.

The model takes raw pixels (float32, 0..255) and scales them itself, so every caller feeds
it the output of :func:`modelio.images.load_array` unchanged. Augmentation is *not*
part of the model: it lives in the training pipeline (:mod:`trainer.augment`), so the
exported graph is deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelio import contract
from modelio.images import InputSpec
from trainer import backbones
from trainer.errors import TrainerError
from trainer.families.base import Fitted, with_fitted_temperature
from trainer.gradients import gradient_histograms
from trainer.model import DEFAULT_SPEC, DEFAULTS, Hyperparameters
from trainer.pipelines import training_datasets

if TYPE_CHECKING:
    from trainer.config import TrainConfig
    from trainer.data import LoadedDataset, Split

NAME = "dense"


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

    inputs = keras.Input((spec.height, spec.width, spec.channels), name="images")
    if backbones.is_registered(backbone):  # frozen, pooled ImageNet features; the head is trained
        shape = (spec.height, spec.width, spec.channels)
        x = backbones.feature_extractor(
            str(backbone), shape, hparams.feature_taps, mirror=hparams.feature_mirror
        )(inputs)
    elif backbone:
        x = _backbone_features(inputs, spec, backbone, weights)
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    elif hparams.stem == "gradients":
        x = gradient_histograms(inputs, spec, hparams)
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
    outputs = layers.Softmax(name=contract.PROBABILITIES)(logits)
    model = keras.Model(inputs, outputs, name="bone_fracture_cnn")
    compile_model(model, hparams, num_classes)
    return model


def _backbone_features(inputs: Any, spec: InputSpec, name: str, weights: Path | None) -> Any:
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

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


def _keep_best_callback() -> Any:
    import keras  # noqa: PLC0415

    class KeepBest(keras.callbacks.Callback):
        """Remember the weights of the epoch with the lowest validation loss."""

        def __init__(self) -> None:
            super().__init__()
            self.best_loss = float("inf")
            self.best_epoch = 0
            self.best_weights: list[Any] | None = None

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            loss = (logs or {}).get("val_loss", float("inf"))
            if loss < self.best_loss:
                self.best_loss, self.best_epoch = loss, epoch + 1
                self.best_weights = self.model.get_weights()

        def on_train_end(self, logs: dict[str, float] | None = None) -> None:
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return KeepBest()


def _validate_keras_backbone(config: TrainConfig) -> None:
    """A ``keras.applications`` name and its weights file, checked before any decoding."""
    import keras  # noqa: PLC0415

    if not callable(getattr(keras.applications, str(config.backbone), None)):
        raise TrainerError(
            f"unknown --backbone {config.backbone!r}: use {' or '.join(backbones.BACKBONES)}, "
            "or a keras.applications name such as MobileNetV2"
        )
    if config.weights is not None and not Path(config.weights).is_file():
        raise TrainerError(f"--weights file {config.weights} does not exist")


class CnnFamily:
    """``head="dense"``: trained by Keras with early stopping; see the module docstring."""

    name = NAME

    def validate(self, config: TrainConfig) -> None:
        if backbones.is_registered(config.backbone):
            if config.weights is not None:
                raise TrainerError(f"{config.backbone} brings its own weights: drop --weights")
            backbones.check_available(str(config.backbone))
        elif config.backbone:
            _validate_keras_backbone(config)

    def fit(
        self, config: TrainConfig, hparams: Hyperparameters, dataset: LoadedDataset, split: Split
    ) -> Fitted:
        """Train one model (best epoch's weights kept), then fit its temperature."""
        import keras  # noqa: PLC0415

        keras.utils.set_random_seed(config.seed)
        num_classes = len(dataset.classes)
        train_ds, val_ds = training_datasets(config, dataset, split)
        model = make_model(
            num_classes, config.spec, hparams, backbone=config.backbone, weights=config.weights
        )
        keep_best = _keep_best_callback()
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            callbacks=[
                keep_best,
                keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience),
            ],
            shuffle=False,  # the tf.data pipeline shuffles
            verbose=config.verbose,
        )
        return with_fitted_temperature(
            model,
            dataset,
            split,
            history={k: [float(v) for v in vs] for k, vs in history.history.items()},
            best_epoch=keep_best.best_epoch,
        )

    def hyperparameter_record(
        self, config: TrainConfig, hparams: Hyperparameters, search: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {
            **hparams.to_dict(),
            "image_size": config.image_size,
            "seed": config.seed,
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "augmentation": config.augment.__dict__,
            "backbone": config.backbone,
            "backbone_weights": str(config.weights) if config.weights else None,
            "class_balancing": "per-sample weights, equal total weight per class",
            **({"search": search} if search else {}),
        }

    def training_record(self, fitted: Fitted) -> dict[str, Any]:
        return {
            "method": "Adam, best epoch by validation loss",
            "epochs_run": len(fitted.history.get("loss", [])),
            "best_epoch": fitted.best_epoch,
        }


FAMILY = CnnFamily()
