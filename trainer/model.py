"""What every model family shares: the :class:`Hyperparameters` and the graph views
temperature scaling needs (:func:`with_temperature`, :func:`logits_model`).

The families themselves live in :mod:`trainer.families` (the CNN, the forest, the
pretrained-backbone heads). Every model takes raw pixels (float32, 0..255) and scales
them itself, so every caller feeds it the output of :func:`modelio.images.load_array`
unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from modelio import contract
from modelio.images import InputSpec


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


def with_temperature(model: Any, temperature: float) -> Any:
    """The same network with its logits divided by ``temperature`` before the softmax."""
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    logits = model.get_layer("logits").output
    scaled = layers.Rescaling(1.0 / temperature, name="temperature")(logits)
    outputs = layers.Softmax(name=contract.PROBABILITIES)(scaled)
    return keras.Model(model.input, outputs, name=model.name)


def logits_model(model: Any) -> Any:
    """A view of ``model`` that outputs its logits (for temperature scaling)."""
    import keras  # noqa: PLC0415

    return keras.Model(model.input, model.get_layer("logits").output)
