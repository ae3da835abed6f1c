"""The model families, by name: ``Hyperparameters.head`` selects one (as timm builds an
architecture from its registered name).

=========  ======================================  ===================================
name       module                                  what is fitted
=========  ======================================  ===================================
dense      :mod:`trainer.families.cnn`             a dense head by gradient descent,
                                                   on VGG blocks, the gradient stem or
                                                   a backbone (``keras.applications``
                                                   or a registry one)
forest     :mod:`trainer.families.forest`          extra trees on the gradient stem
linear     :mod:`trainer.families.linear`          head pieces (type head, OOD score,
                                                   ...) on a frozen registry backbone
=========  ======================================  ===================================

Each family owns its build (the Keras graph), its checks, its fit and what it writes
into metadata.json; :mod:`trainer.train` only orchestrates (load, split, fit, evaluate,
export) and knows none of them by name.

How to add a family:

1. write ``trainer/families/<name>.py`` with a class satisfying
   :class:`~trainer.families.base.Family` (``name``, ``validate``, ``fit``,
   ``hyperparameter_record``, ``training_record``) and a module-level ``FAMILY``;
   build its graph so the outputs carry :mod:`modelio.contract` names (a ``logits``
   layer lets it use :func:`~trainer.families.base.with_fitted_temperature`);
2. add ``<name>.FAMILY`` to :data:`FAMILIES` below;
3. add a recipe in :mod:`trainer.recipes` and a test under ``tests/trainer/``.

A new *head on the pretrained backbone* (fracture detection, say) is not a family: it is
a head piece of the linear family (see :mod:`trainer.families.linear`), so it shares the
backbone pass and the exported graph. Family modules import TensorFlow only inside
functions, so importing this registry stays cheap; no family imports :mod:`trainer.train`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainer.errors import TrainerError
from trainer.families import cnn, forest, linear
from trainer.families.base import Family, Fitted

if TYPE_CHECKING:
    from trainer.config import TrainConfig
    from trainer.data import LoadedDataset, Split
    from trainer.model import Hyperparameters

__all__ = ["FAMILIES", "Family", "Fitted", "fit", "get"]

#: Every family by its ``Hyperparameters.head`` name.
FAMILIES: dict[str, Family] = {
    family.name: family for family in (cnn.FAMILY, forest.FAMILY, linear.FAMILY)
}


def get(name: str) -> Family:
    """The family called ``name``; an unknown one is a one-line TrainerError."""
    if name not in FAMILIES:
        names = list(FAMILIES)
        raise TrainerError(f"unknown head {name!r}; use {', '.join(names[:-1])} or {names[-1]}")
    return FAMILIES[name]


def fit(
    config: TrainConfig, hparams: Hyperparameters, dataset: LoadedDataset, split: Split
) -> Fitted:
    """Fit the family that ``hparams.head`` names (see :meth:`Family.fit`)."""
    return get(hparams.head).fit(config, hparams, dataset, split)
