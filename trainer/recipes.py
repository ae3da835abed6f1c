"""Named training recipes: bundles of settings chosen by measurement (docs/experiments.md).

``default`` is the quick 5-epoch run used by the demo and the tests. ``best`` is the
recipe with the highest grouped cross-validated accuracy on the real training split that
we have measured; it trains longer. Explicit command-line flags override a recipe.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from trainer.augment import MODERATE, NONE, STRONG
from trainer.model import Hyperparameters

_LONG: dict[str, Any] = {"epochs": 30, "patience": 8}
_E15: dict[str, Any] = {"epochs": 15, "patience": 5}
#: Recipes keep the hyperparameters they were measured with, whatever the defaults become.
_CNN_DROPOUT_03 = Hyperparameters(dropout=0.3)
_GRADIENTS = Hyperparameters(stem="gradients", dropout=0.3)

#: Every recipe tried in docs/experiments.md, so each row there can be reproduced with
#: ``python -m trainer crossval --recipe NAME``.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "default-dropout0.3": {"hparams": _CNN_DROPOUT_03},  # the default until 2026-11-27
    "default-batch32": {"batch_size": 32, "hparams": _CNN_DROPOUT_03},
    "long": {**_LONG, "augment": MODERATE, "batch_size": 32, "hparams": _CNN_DROPOUT_03},
    "long-regularised": {
        **_LONG,
        "batch_size": 32,
        "hparams": Hyperparameters(dropout=0.4, label_smoothing=0.1),
        "augment": STRONG,
    },
    "gradients": {"hparams": _GRADIENTS},
    "gradients-long": {**_LONG, "hparams": _GRADIENTS},
    # 15 epochs (patience 5) and one change each, to see which way the head wants to go
    "gradients-e15": {**_E15, "hparams": _GRADIENTS},
    "gradients-e15-no-augmentation": {**_E15, "hparams": _GRADIENTS, "augment": NONE},
    "gradients-e15-dropout0.5": {**_E15, "hparams": replace(_GRADIENTS, dropout=0.5)},
    "gradients-e15-256-units": {
        **_E15,
        "hparams": replace(_GRADIENTS, dense_units=256, dropout=0.5),
    },
    "gradients-e15-16-cells": {**_E15, "hparams": replace(_GRADIENTS, gradient_cells=16)},
    "gradients-e15-16-cells-256px": {
        **_E15,
        "image_size": 256,
        "hparams": replace(_GRADIENTS, gradient_cells=16),
    },
    "gradients-e15-lr3e-4": {**_E15, "hparams": replace(_GRADIENTS, learning_rate=3e-4)},
    # extra trees grown on the same fixed features instead of a dense head
    "gradients-forest": {"hparams": Hyperparameters(stem="gradients", head="forest")},
}
#: highest grouped-CV top-1 measured (docs/experiments.md): 28.4 +- 1.3% top-1 and 57.1% top-3
#: (27.7-28.4% over three fold seeds), against 22.6-23.7% for ``gradients-long``, the best
#: dense head, and 14.8 +- 3.5% for the 5-epoch CNN default on the same leak-free folds
# frozen ImageNet features (trainer.backbones) under a logistic-regression head
_STAGES = ("stage4", "stage5", "stage6", "stage7", "head")
RECIPES.update(
    {
        "pretrained-lite0": {
            "backbone": "efficientnet-lite0",
            "image_size": 224,
            "hparams": Hyperparameters(head="linear"),
        },
        "pretrained-lite0-stages": {
            "backbone": "efficientnet-lite0",
            "image_size": 224,
            "hparams": Hyperparameters(head="linear", feature_taps=_STAGES),
        },
        "pretrained-lite2-stages": {
            "backbone": "efficientnet-lite2",
            "image_size": 352,
            "hparams": Hyperparameters(head="linear", feature_taps=_STAGES),
        },
        "pretrained-lite2-stages-mirror": {
            "backbone": "efficientnet-lite2",
            "image_size": 352,
            "hparams": Hyperparameters(head="linear", feature_taps=_STAGES, feature_mirror=True),
        },
    }
)
RECIPES["best"] = RECIPES["pretrained-lite2-stages-mirror"]


def recipe_settings(name: str) -> dict[str, Any]:
    """TrainConfig keyword arguments of a recipe (a copy the caller may update)."""
    from trainer.errors import TrainerError  # noqa: PLC0415

    if name not in RECIPES:
        raise TrainerError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    return dict(RECIPES[name])
