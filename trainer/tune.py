"""Hyperparameter search with keras-tuner over :func:`trainer.families.cnn.build_model`."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.families.cnn import build_model, hparams_from_tuner
from trainer.model import Hyperparameters
from trainer.pipelines import training_datasets

if TYPE_CHECKING:
    from trainer.config import TrainConfig
    from trainer.data import LoadedDataset, Split


def search_hyperparameters(
    config: TrainConfig, dataset: LoadedDataset, split: Split
) -> tuple[Hyperparameters, dict[str, Any]]:
    """Random search on the validation split; the test split is never looked at."""
    import keras_tuner  # noqa: PLC0415

    num_classes = len(dataset.classes)
    train_ds, val_ds = training_datasets(config, dataset, split)
    workdir = Path(tempfile.mkdtemp(prefix="bonefrac-tuner-"))
    try:
        tuner = keras_tuner.RandomSearch(
            functools.partial(build_model, num_classes=num_classes, spec=config.spec),
            objective="val_loss",
            max_trials=config.max_trials,
            seed=config.seed,
            directory=str(workdir),
            project_name=config.name,
            overwrite=True,
        )
        tuner.search(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            shuffle=False,
            verbose=config.verbose,
        )
        best = tuner.get_best_hyperparameters(1)[0]
        trials = [
            {"hyperparameters": trial.hyperparameters.values, "val_loss": trial.score}
            for trial in tuner.oracle.get_best_trials(config.max_trials)
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return hparams_from_tuner(best), {
        "tuner": "keras_tuner.RandomSearch",
        "objective": "val_loss",
        "max_trials": config.max_trials,
        "epochs_per_trial": config.epochs,
        "trials": trials,
    }
