"""What every model family gives the orchestration: the :class:`Family` protocol and its
:class:`Fitted` result, plus the temperature fit shared by the families with a
``logits`` layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from trainer import calibration
from trainer.model import Hyperparameters, logits_model, with_temperature
from trainer.predict import predict

if TYPE_CHECKING:
    from trainer.config import TrainConfig
    from trainer.data import LoadedDataset, Split


@dataclass(frozen=True)
class Fitted:
    """A trained model with its temperature folded in, and how training went."""

    model: Any
    history: dict[str, list[float]]
    best_epoch: int
    temperature: float
    val_probabilities: np.ndarray  # the calibrated model's answers on the validation split
    # what a weight package cannot supply (``head="linear"``): written as head.npz
    head_arrays: dict[str, np.ndarray] | None = None
    # metadata.json sections the family adds (e.g. ``out_of_distribution``), in order
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)


class Family(Protocol):
    """One model family: how its settings are checked, how it is fitted and recorded.

    ``name`` is the ``Hyperparameters.head`` value that selects it.
    """

    name: str

    def validate(self, config: TrainConfig) -> None:
        """Raise :class:`trainer.errors.TrainerError` for settings this family cannot use,
        before any image is decoded."""
        ...

    def fit(
        self, config: TrainConfig, hparams: Hyperparameters, dataset: LoadedDataset, split: Split
    ) -> Fitted:
        """A calibrated model fitted on ``split.train`` (validation for the temperature)."""
        ...

    def hyperparameter_record(
        self, config: TrainConfig, hparams: Hyperparameters, search: dict[str, Any] | None
    ) -> dict[str, Any]:
        """metadata.json → ``hyperparameters``: what the model was made with."""
        ...

    def training_record(self, fitted: Fitted) -> dict[str, Any]:
        """metadata.json → ``training`` (the orchestration adds the seconds)."""
        ...


def with_fitted_temperature(
    model: Any,
    dataset: LoadedDataset,
    split: Split,
    *,
    history: dict[str, list[float]],
    best_epoch: int,
) -> Fitted:
    """Fit the temperature on the validation split and fold it into the model."""
    val_logits = predict(logits_model(model), dataset.images[split.val])
    temperature = calibration.fit_temperature(val_logits, dataset.labels[split.val])
    return Fitted(
        model=with_temperature(model, temperature),
        history=history,
        best_epoch=best_epoch,
        temperature=temperature,
        val_probabilities=calibration.softmax(val_logits, temperature),
    )
