"""The fracture heads folded into the exported graph, as fixed Keras layers.

:func:`fracture_outputs` takes the backbone's tapped maps (the same tensors the type
head pools, so one backbone pass serves every head) and adds the two outputs the
contract names (:mod:`modelio.contract`): ``fracture_probability`` ``(N,)`` and
``fracture_map`` ``(N, h, w)``. Every layer is a dense product, a ReLU, a sigmoid, a
repeat, a max or a reshape (TFLite has them all), and every number comes from
:class:`trainer.fracture_heads.FractureHeads`; nothing here is trained by Keras.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelio.contract import FRACTURE_MAP, FRACTURE_PROBABILITY
from trainer.errors import TrainerError
from trainer.fracture_heads import MAP_TAPS, POOLED_TAPS, FractureHeads


def _fixed_dense(units: int, kernel: np.ndarray, bias: np.ndarray, name: str, **kw: Any) -> Any:
    from keras import layers  # noqa: PLC0415

    layer = layers.Dense(units, name=name, **kw)
    layer.build((None, kernel.shape[0]))
    layer.set_weights([kernel.astype("float32"), bias.astype("float32")])
    layer.trainable = False
    return layer


def fracture_outputs(maps: dict[str, Any], heads: FractureHeads) -> dict[str, Any]:
    """``{fracture_probability, fracture_map}`` tensors from the tapped maps by tap name."""
    from keras import layers  # noqa: PLC0415

    missing = [tap for tap in (*POOLED_TAPS, *MAP_TAPS) if tap not in maps]
    if missing:
        raise TrainerError(
            f"the fracture heads read the taps {', '.join(missing)}, which this model's "
            "backbone does not tap"
        )
    height = max(int(maps[t].shape[1]) for t in MAP_TAPS)
    width = max(int(maps[t].shape[2]) for t in MAP_TAPS)
    parts = []
    for tap in MAP_TAPS:
        h, w = int(maps[tap].shape[1]), int(maps[tap].shape[2])
        part = maps[tap]
        if (h, w) != (height, width):
            part = layers.UpSampling2D((height // h, width // w), name=f"fracture_repeat_{tap}")(
                part
            )
        parts.append(part)
    cells = layers.Concatenate(name="fracture_cells")(parts)
    loc = heads.localiser
    # the standardisation folded into the first layer: ((x - m) / s) @ W = x @ (W / s) - ...
    w1 = loc.w1 / loc.scale[:, None]
    b1 = loc.b1 - (loc.mean / loc.scale) @ loc.w1
    hidden = _fixed_dense(len(b1), w1, b1, "fracture_hidden", activation="relu")(cells)
    cell_logits = _fixed_dense(1, loc.w2[:, None], np.array([loc.b2]), "fracture_cell_logit")(
        hidden
    )
    fracture_map = layers.Reshape((height, width), name=FRACTURE_MAP)(
        layers.Activation("sigmoid", name="fracture_cell_probability")(cell_logits)
    )
    peak = layers.GlobalMaxPooling2D(name="fracture_peak")(cell_logits)

    det = heads.detector
    pooled = layers.Concatenate(name="fracture_pooled")(
        [
            layers.GlobalAveragePooling2D(name=f"fracture_pool_{tap}")(maps[tap])
            for tap in POOLED_TAPS
        ]
    )
    kernel = (det.weights / det.scale)[:, None]
    bias = np.array([det.pooled_bias - float((det.mean / det.scale) @ det.weights)])
    pooled_logit = _fixed_dense(1, kernel, bias, "fracture_pooled_logit")(pooled)
    both = layers.Concatenate(name="fracture_views")([pooled_logit, peak])
    combined = _fixed_dense(
        1,
        np.array([[det.pooled_weight], [det.peak_weight]]),
        np.array([det.bias]),
        "fracture_logit",
        activation="sigmoid",
    )(both)
    probability = layers.Reshape((), name=FRACTURE_PROBABILITY)(combined)
    return {FRACTURE_PROBABILITY: probability, FRACTURE_MAP: fracture_map}
