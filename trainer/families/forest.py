"""The forest family (``head="forest"``): extra trees grown on the fixed gradient stem.

The trees are grown by scikit-learn (:mod:`trainer.forest`) and written into the graph as
tables a Keras layer walks, so the exported model still takes raw pixels. No epochs and
no early stopping; the validation split is left for the temperature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelio import contract
from modelio.images import InputSpec
from trainer.config import log
from trainer.errors import TrainerError
from trainer.families.base import Fitted, with_fitted_temperature
from trainer.gradients import gradient_features_model, gradient_histograms
from trainer.model import Hyperparameters
from trainer.predict import predict

if TYPE_CHECKING:
    from trainer.config import TrainConfig
    from trainer.data import LoadedDataset, Split
    from trainer.forest import ForestTables

NAME = "forest"


def make_forest_model(spec: InputSpec, hparams: Hyperparameters, forest: ForestTables) -> Any:
    """The fixed gradient stem under grown trees (``head="forest"``, :mod:`trainer.forest`).

    It ends like :func:`make_model` (``logits``, then ``probabilities``), so temperature
    scaling, export and serving treat both alike; nothing in it is trained by Keras.
    """
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    from trainer.forest import ForestVote  # noqa: PLC0415

    inputs = keras.Input((spec.height, spec.width, spec.channels), name="images")
    logits = ForestVote(forest, name="logits")(gradient_histograms(inputs, spec, hparams))
    outputs = layers.Softmax(name=contract.PROBABILITIES)(logits)
    return keras.Model(inputs, outputs, name="bone_fracture_forest")


class ForestFamily:
    """``head="forest"``: see the module docstring."""

    name = NAME

    def validate(self, config: TrainConfig) -> None:
        if config.hparams.stem != "gradients":
            raise TrainerError("a forest head grows on the gradients stem only")
        if config.tune or config.backbone:
            raise TrainerError(
                "this recipe grows a forest on fixed features: it takes no --tune or --backbone"
            )

    def fit(
        self, config: TrainConfig, hparams: Hyperparameters, dataset: LoadedDataset, split: Split
    ) -> Fitted:
        """Trees grown on the training split's fixed gradient features."""
        from trainer.forest import grow_forest  # noqa: PLC0415

        features = predict(
            gradient_features_model(config.spec, hparams), dataset.images[split.train]
        )
        tables = grow_forest(
            features,
            dataset.labels[split.train],
            len(dataset.classes),
            trees=hparams.forest_trees,
            min_leaf=hparams.forest_min_leaf,
            seed=config.seed,
        )
        log(
            config,
            f"grew {tables.trees} trees (depth up to {tables.depth}) on {len(features)} images",
        )
        return with_fitted_temperature(
            make_forest_model(config.spec, hparams, tables),
            dataset,
            split,
            history={},
            best_epoch=0,
        )

    def hyperparameter_record(
        self, config: TrainConfig, hparams: Hyperparameters, search: dict[str, Any] | None
    ) -> dict[str, Any]:
        """A forest has no epochs or batches."""
        keep = (
            "stem",
            "head",
            "gradient_cells",
            "orientation_bins",
            "forest_trees",
            "forest_min_leaf",
        )
        return {
            **{key: value for key, value in hparams.to_dict().items() if key in keep},
            "image_size": config.image_size,
            "seed": config.seed,
            "class_balancing": "class_weight='balanced' in every tree",
        }

    def training_record(self, fitted: Fitted) -> dict[str, Any]:
        return {"method": "extra trees grown by scikit-learn on the training split's features"}


FAMILY = ForestFamily()
