"""What one training run is asked to do: :class:`TrainConfig`, filled by the CLI.

Its own module so the families, the pipelines and the tuner can take a config without
importing the orchestration in :mod:`trainer.train` (which imports them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelio.images import InputSpec
from modelio.locations import DEFAULT_MODEL_NAME
from trainer.augment import AugmentConfig
from trainer.model import DEFAULTS, Hyperparameters


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; the CLI fills it from flags."""

    data_dir: Path
    models_dir: Path
    name: str = DEFAULT_MODEL_NAME
    epochs: int = 5
    image_size: int = 128
    channels: int = 1
    batch_size: int = 16  # measured: twice the updates of 32 learned faster in 5 epochs
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    patience: int = 3
    tune: bool = False
    max_trials: int = 5
    hparams: Hyperparameters = DEFAULTS
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    backbone: str | None = None
    weights: Path | None = None
    data_description: str | None = None  # metadata's "trained_on"; default: data.describe
    # a detection folder (Fractured/ + Non_fractured/ and COCO outlines): the fracture heads
    fracture_data: Path | None = None
    # keeps the detection set's backbone features between runs (they are the costly part)
    feature_cache: Path | None = None
    verbose: int = 1

    @property
    def spec(self) -> InputSpec:
        return InputSpec(self.image_size, self.image_size, self.channels)


def log(config: TrainConfig, message: str) -> None:
    """A progress line, unless the run is quiet."""
    if config.verbose:
        print(message, flush=True)
