"""Named training recipes: bundles of settings chosen by measurement (docs/experiments.md).

``default`` is the quick 5-epoch run used by the demo and the tests. ``best`` is the
recipe with the highest grouped cross-validated accuracy on the real training split that
we have measured; it trains longer. Explicit command-line flags override a recipe.
"""

from __future__ import annotations

from typing import Any

from trainer.augment import MODERATE, STRONG
from trainer.model import Hyperparameters

_LONG: dict[str, Any] = {"epochs": 30, "patience": 8}

#: Every recipe tried in docs/experiments.md, so each row there can be reproduced with
#: ``python -m trainer crossval --recipe NAME``.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "default-batch32": {"batch_size": 32},
    "long": {**_LONG, "augment": MODERATE, "batch_size": 32},
    "long-regularised": {
        **_LONG,
        "batch_size": 32,
        "hparams": Hyperparameters(dropout=0.4, label_smoothing=0.1),
        "augment": STRONG,
    },
}
RECIPES["best"] = RECIPES["long"]  # highest grouped-CV top-1 measured (docs/experiments.md)


def recipe_settings(name: str) -> dict[str, Any]:
    """TrainConfig keyword arguments of a recipe (a copy the caller may update)."""
    from trainer.errors import TrainerError  # noqa: PLC0415

    if name not in RECIPES:
        raise TrainerError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    return dict(RECIPES[name])
