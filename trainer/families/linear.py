"""The pretrained-backbone family (``head="linear"``): heads fitted on frozen features.

One pass of a frozen registry backbone (:mod:`trainer.backbones`) gives pooled features
and per-position feature maps; *head pieces* fitted with scikit-learn/numpy on those
features each add named outputs to the same exported graph and their arrays to
``head.npz``. Today's pieces:

- :class:`TypeHead`: the class-balanced logistic regression (:mod:`trainer.heads`), its
  temperature folded in: ``probabilities`` and ``class_maps``;
- :class:`OodPiece`: the out-of-distribution distance over its threshold: ``ood_score``.

To add a head on the same backbone pass (say fracture detection): write a class with
``outputs(frozen)``, ``arrays()`` and a ``from_arrays(arrays)`` classmethod (see
:class:`HeadPiece`), add it to :data:`PIECES` (so ``trainer.assemble`` rebuilds it from
``head.npz``), and add a function ``FrozenFeatures -> FittedPiece`` to :data:`FITTERS`
(so training fits it). Its output names belong in :mod:`modelio.contract`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from modelio import contract
from modelio.images import InputSpec
from trainer import backbones, calibration
from trainer.config import log
from trainer.errors import TrainerError
from trainer.families.base import Fitted
from trainer.fracture_piece import (
    DetectionFeatures,
    FracturePiece,
    check_taps,
    detection_features,
    fit_fracture_piece,
    folder_name,
)
from trainer.heads import OOD_QUANTILE, LinearHead, OodModel
from trainer.model import Hyperparameters
from trainer.predict import predict, predict_all

if TYPE_CHECKING:
    from trainer.config import TrainConfig
    from trainer.data import LoadedDataset, Split

NAME = "linear"


def reference_images(spec: InputSpec) -> np.ndarray:
    """Black, gray, white, a diagonal ramp and a fixed checkerboard: deterministic inputs.

    The fitted model's answers on them go into ``head.npz`` (``reference_*``), and a
    rebuilt model must give them again (:func:`trainer.assemble.check_reference`).
    """
    ys, xs = np.mgrid[0 : spec.height, 0 : spec.width].astype(np.float32)
    ramp = 255.0 * (xs + ys) / max(spec.height + spec.width - 2, 1)
    checker = 255.0 * (((xs // 8) + (ys // 8)) % 2)
    planes = [np.full_like(xs, v) for v in (0.0, 127.0, 255.0)] + [ramp, checker]
    return np.stack([np.repeat(p[..., None], spec.channels, axis=-1) for p in planes])


@dataclass(frozen=True)
class FrozenPass:
    """The backbone pass inside the graph (Keras tensors) that every head piece reads."""

    features: Any  # pooled features of every tap, concatenated: (N, F)
    maps: list[Any]  # each tap's feature map: (N, h, w, channels), in ``taps`` order
    taps: tuple[str, ...]


class HeadPiece(Protocol):
    """One fitted head on the frozen backbone pass."""

    def outputs(self, frozen: FrozenPass) -> dict[str, Any]:
        """The graph outputs this piece adds, by their :mod:`modelio.contract` names."""
        ...

    def arrays(self) -> dict[str, np.ndarray]:
        """What ``head.npz`` keeps of it (keys prefixed so pieces never collide)."""
        ...


@dataclass(frozen=True)
class TypeHead:
    """The fracture-type head: logistic regression over the pooled features."""

    head: LinearHead
    temperature: float = 1.0

    def kernel_and_bias(self) -> tuple[np.ndarray, np.ndarray]:
        """The Dense layer's weights on raw features: standardisation and temperature
        folded in."""
        head = self.head
        kernel = (head.weights / head.scale[:, None] / self.temperature).astype("float32")
        bias = (head.bias - (head.mean / head.scale) @ head.weights) / self.temperature
        return kernel, bias.astype("float32")

    def outputs(self, frozen: FrozenPass) -> dict[str, Any]:
        from keras import layers  # noqa: PLC0415

        dense = layers.Dense(len(self.head.bias), name="logits")
        logits = dense(frozen.features)
        kernel, bias = self.kernel_and_bias()
        dense.set_weights([kernel, bias])
        return {
            contract.PROBABILITIES: layers.Softmax(name=contract.PROBABILITIES)(logits),
            contract.CLASS_MAPS: _class_maps(frozen.maps, frozen.taps, kernel),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        head = self.head
        arrays = {f"head_{k}": v for k, v in head.__dict__.items() if isinstance(v, np.ndarray)}
        arrays.update(temperature=np.asarray(self.temperature), head_c=np.asarray(head.c))
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> TypeHead:
        """Raises KeyError when head.npz lacks it (every linear model has one)."""
        head = LinearHead(
            mean=arrays["head_mean"],
            scale=arrays["head_scale"],
            weights=arrays["head_weights"],
            bias=arrays["head_bias"],
            c=float(arrays["head_c"]),
        )
        return cls(head, float(arrays["temperature"]))


@dataclass(frozen=True)
class OodPiece:
    """The out-of-distribution score: the features' distance over its threshold."""

    ood: OodModel

    def outputs(self, frozen: FrozenPass) -> dict[str, Any]:
        return {contract.OOD_SCORE: OodScore(self.ood, name=contract.OOD_SCORE)(frozen.features)}

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"ood_{k}": np.asarray(v) for k, v in self.ood.__dict__.items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> OodPiece:
        """Raises KeyError when head.npz lacks it (every shipped head has one)."""
        return cls(
            OodModel(
                mean=arrays["ood_mean"],
                scale=arrays["ood_scale"],
                components=arrays["ood_components"],
                inverse_variance=arrays["ood_inverse_variance"],
                residual_inverse_variance=float(arrays["ood_residual_inverse_variance"]),
                threshold=float(arrays["ood_threshold"]),
            )
        )


#: The pieces a ``head.npz`` is rebuilt from, in output order. A piece that may be absent
#: from older heads returns None from ``from_arrays`` instead of raising KeyError.
PIECES: tuple[Any, ...] = (TypeHead, OodPiece, FracturePiece)


def build_graph(
    spec: InputSpec, backbone: str, hparams: Hyperparameters, pieces: list[HeadPiece]
) -> Any:
    """A frozen registry backbone under fitted head pieces, one backbone pass for all.

    ``hparams`` says which features (``feature_taps``, ``feature_mirror``) the pieces read.
    Nothing in it is trained by Keras.
    """
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    inputs = keras.Input((spec.height, spec.width, spec.channels), name="images")
    shape = (spec.height, spec.width, spec.channels)
    taps = tuple(hparams.feature_taps)
    maps = backbones.feature_maps(backbone, shape, taps, mirror=hparams.feature_mirror)(inputs)
    maps = maps if isinstance(maps, list) else [maps]
    pooled = [
        layers.GlobalAveragePooling2D(name=f"pool_{tap}")(m)
        for tap, m in zip(taps, maps, strict=True)
    ]
    features = pooled[0] if len(pooled) == 1 else layers.Concatenate(name="features")(pooled)
    frozen = FrozenPass(features=features, maps=maps, taps=taps)
    outputs: dict[str, Any] = {}
    for piece in pieces:
        added = piece.outputs(frozen)
        if clash := set(added) & set(outputs):
            raise TrainerError(f"two head pieces both add {sorted(clash)}")
        outputs.update(added)
    return keras.Model(inputs, outputs, name=f"bone_fracture_{backbone.replace('-', '_')}")


def make_pretrained_model(
    spec: InputSpec,
    backbone: str,
    hparams: Hyperparameters,
    head: LinearHead,
    *,
    ood: OodModel | None = None,
    temperature: float = 1.0,
) -> Any:
    """The type head (and, with ``ood``, the OOD score) on a frozen registry backbone.

    Outputs ``probabilities`` (the head's softmax, ``temperature`` folded into its
    weights), ``class_maps`` (where in the image the evidence for each class lies, see
    :func:`_class_maps`) and, with ``ood``, ``ood_score``: the features' distance from the
    training radiographs over the calibrated threshold, so above 1 means "unlike anything
    it learned from".
    """
    pieces: list[HeadPiece] = [TypeHead(head, temperature)]
    if ood is not None:
        pieces.append(OodPiece(ood))
    return build_graph(spec, backbone, hparams, pieces)


def rebuild(metadata: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[Any, InputSpec]:
    """The Keras model described by ``metadata`` with the fitted ``arrays`` of head.npz."""
    try:
        record = metadata["hyperparameters"]
        backbone = record["backbone"]
        hparams = Hyperparameters(
            head=NAME,
            feature_taps=tuple(record["feature_taps"]),
            feature_mirror=bool(record.get("feature_mirror", False)),
        )
        spec = InputSpec.from_dict(metadata["input"])
        pieces = [p for p in (cls.from_arrays(arrays) for cls in PIECES) if p is not None]
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainerError(f"the shipped head does not describe a model: missing {exc}") from exc
    backbones.check_available(backbone)
    return build_graph(spec, backbone, hparams, pieces), spec


def _class_maps(maps: list[Any], taps: tuple[str, ...], kernel: np.ndarray) -> Any:
    """Class activation maps of a linear head over pooled feature maps: ``(N, h, w, classes)``.

    The head's logit for class k, less its bias, is the average over positions of
    ``map(x, y) @ kernel_k`` (pooling is an average and the head is linear), so that
    product, position by position, splits it over the image exactly (Zhou et al.'s CAM;
    the bias, the same everywhere, is left out). Each tap's map is projected with its rows
    of the kernel and repeated up to the finest tap's grid: by an integer factor, which
    keeps the average, whenever the coarse grid divides the fine one (every recipe's
    size: 224 and 352 px); otherwise by nearest-neighbour resizing, whose average is close
    but not exact. The mean over classes is taken out of the kernel first: the softmax
    ignores what raises every class alike (the bone itself), so what is left is the
    evidence for one class *over the others*.
    """
    from keras import layers  # noqa: PLC0415

    contrast = kernel - kernel.mean(axis=1, keepdims=True)
    height = max(int(m.shape[1]) for m in maps)
    width = max(int(m.shape[2]) for m in maps)
    parts, row = [], 0
    for tap, feature_map in zip(taps, maps, strict=True):
        channels = int(feature_map.shape[-1])
        project = layers.Dense(contrast.shape[1], use_bias=False, name=f"class_map_{tap}")
        part = project(feature_map)
        project.set_weights([contrast[row : row + channels]])
        row += channels
        h, w = int(feature_map.shape[1]), int(feature_map.shape[2])
        if (h, w) != (height, width):
            if height % h == 0 and width % w == 0:
                part = layers.UpSampling2D((height // h, width // w), name=f"repeat_{tap}")(part)
            else:
                part = layers.Resizing(
                    height, width, interpolation="nearest", name=f"repeat_{tap}"
                )(part)
        parts.append(part)
    if len(parts) == 1:
        return layers.Identity(name=contract.CLASS_MAPS)(parts[0])
    return layers.Add(name=contract.CLASS_MAPS)(parts)


@functools.cache
def _ood_layer() -> Any:
    """The layer class, built on first use so importing this module stays TF-free."""
    import keras  # noqa: PLC0415
    from keras import ops  # noqa: PLC0415

    @keras.saving.register_keras_serializable(package="bonefrac")
    class _OodScore(keras.layers.Layer):
        """Features (N, F) -> (N,) :meth:`trainer.heads.OodModel.distances` / threshold.

        Matrix products, squares and sums only (TFLite has them all); no trained weight.
        """

        def __init__(self, features: int, components: int, **kwargs: Any) -> None:
            super().__init__(trainable=False, **kwargs)
            self.features, self.components = features, components
            fixed = functools.partial(self.add_weight, initializer="zeros", trainable=False)
            self.mean = fixed((features,), name="mean")
            self.inverse_scale = fixed((features,), name="inverse_scale")
            self.basis = fixed((features, components), name="components")
            self.inverse_variance = fixed((components,), name="inverse_variance")
            self.residual = fixed((), name="residual_inverse_variance")
            self.inverse_threshold = fixed((), name="inverse_threshold")

        def fill(self, ood: OodModel) -> None:
            self.mean.assign(ood.mean.astype("float32"))
            self.inverse_scale.assign((1.0 / ood.scale).astype("float32"))
            self.basis.assign(ood.components.astype("float32"))
            self.inverse_variance.assign(ood.inverse_variance.astype("float32"))
            self.residual.assign(float(ood.residual_inverse_variance))
            self.inverse_threshold.assign(1.0 / float(ood.threshold))

        def call(self, features: Any) -> Any:
            z = (features - self.mean) * self.inverse_scale
            projected = ops.matmul(z, self.basis)
            squared = projected * projected
            inside = ops.sum(squared * self.inverse_variance, axis=-1)
            outside = ops.sum(z * z, axis=-1) - ops.sum(squared, axis=-1)
            distance = (inside + outside * self.residual) / float(self.features)
            return distance * self.inverse_threshold

        def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
            return (input_shape[0],)

        def get_config(self) -> dict[str, Any]:
            return {
                **super().get_config(),
                "features": self.features,
                "components": self.components,
            }

    return _OodScore


def OodScore(ood: OodModel, **kwargs: Any) -> Any:  # noqa: N802 - reads as a layer
    """A layer holding ``ood`` that scores features against the training distribution."""
    layer = _ood_layer()(int(ood.components.shape[0]), int(ood.components.shape[1]), **kwargs)
    layer.fill(ood)
    return layer


#: Frozen-backbone features of every image of a loaded dataset, kept for the folds of a
#: cross-validation: a pure function of (images, backbone, taps), and the costly part.
_FEATURE_CACHE: dict[tuple[Any, ...], np.ndarray] = {}


def pretrained_features(
    backbone: str, hparams: Hyperparameters, dataset: LoadedDataset
) -> np.ndarray:
    """Pooled features of every image in ``dataset`` (cached for one dataset at a time)."""
    taps, mirror = tuple(hparams.feature_taps), hparams.feature_mirror
    key = (dataset.fingerprint, backbone, taps, mirror, tuple(dataset.images.shape))
    if key not in _FEATURE_CACHE:
        _FEATURE_CACHE.clear()
        extractor = backbones.feature_extractor(
            backbone, dataset.images.shape[1:], taps, mirror=mirror
        )
        _FEATURE_CACHE[key] = predict(extractor, dataset.images)
    return _FEATURE_CACHE[key]


@dataclass(frozen=True)
class FrozenFeatures:
    """What a piece is fitted on: the run, its data and split, and every image's pooled
    features (rows as in ``dataset``)."""

    config: TrainConfig
    hparams: Hyperparameters
    dataset: LoadedDataset
    split: Split
    features: np.ndarray
    detection: DetectionFeatures | None = None  # with --fracture-data


@dataclass(frozen=True)
class FittedPiece:
    """A fitted head piece, the metadata.json sections it adds, and a note for the log."""

    piece: HeadPiece
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""


def fit_ood_piece(frozen: FrozenFeatures) -> FittedPiece:
    """The OOD model on the training split; its threshold from grouped inner folds."""
    from trainer.heads import fit_ood  # noqa: PLC0415

    train, val = frozen.split.train, frozen.split.val
    features, groups = frozen.features[train], frozen.dataset.groups[train]
    sources = None
    if frozen.detection is not None:
        # the radiographs of both datasets: intact bones are radiographs like any other,
        # and a model warned on 12% of them when it knew only the fracture-type images;
        # the threshold keeps each dataset's held-out share flagged at the target
        detection = frozen.detection
        features = np.concatenate([features, detection.pooled])
        groups = np.concatenate([groups, detection.dataset.groups + int(groups.max()) + 1])
        sources = np.repeat([0, 1], [len(train), len(detection.pooled)])
    ood = fit_ood(features, groups, frozen.config.seed, sources)
    val_flagged = float(np.mean(ood.distances(frozen.features[val]) > ood.threshold))
    section = {
        "output": contract.OOD_SCORE,
        "warn_above": contract.OOD_WARN_ABOVE,
        "method": "Mahalanobis distance of the backbone features in their top "
        f"{ood.components.shape[1]} principal components plus the residual, over a "
        f"threshold: the {OOD_QUANTILE:.0%} quantile of held-out training radiographs "
        "(grouped inner folds)"
        + (
            ", the larger of the two datasets' own quantiles (type and fracture data)"
            if sources is not None
            else ""
        ),
        "threshold": round(float(ood.threshold), 6),
        "validation_flagged": round(val_flagged, 4),
    }
    return FittedPiece(
        OodPiece(ood),
        {"out_of_distribution": section},
        f"OOD threshold flags {val_flagged:.1%} of the validation radiographs",
    )


def fit_fracture(frozen: FrozenFeatures) -> FittedPiece | None:
    """The fracture heads on ``--fracture-data`` (:mod:`trainer.fracture_piece`), or None
    for a run without it."""
    if frozen.detection is None:
        return None
    piece, block = fit_fracture_piece(
        frozen.detection, seed=frozen.config.seed, config=frozen.config
    )
    cv = block["cross_validation"]
    return FittedPiece(
        piece,
        {"fracture": block},
        f"fracture heads: grouped-CV ROC AUC {cv['roc_auc']:.3f}",
    )


#: The pieces fitted after the type head, in output order (each reads the same features);
#: a fitter returns None when its piece does not apply to the run.
FITTERS: tuple[Callable[[FrozenFeatures], FittedPiece | None], ...] = (
    fit_ood_piece,
    fit_fracture,
)


class LinearFamily:
    """``head="linear"``: see the module docstring."""

    name = NAME

    def validate(self, config: TrainConfig) -> None:
        if config.tune or config.weights or not backbones.is_registered(config.backbone):
            raise TrainerError(
                "a linear head is fitted on a pretrained backbone's frozen features: it needs "
                f"--backbone {' or '.join(backbones.BACKBONES)} and takes no --tune or --weights"
            )
        backbones.check_available(str(config.backbone))
        if config.fracture_data is not None:
            check_taps(config.hparams)
            if not Path(config.fracture_data).is_dir():
                raise TrainerError(f"--fracture-data {config.fracture_data} is not a folder")

    def fit(
        self, config: TrainConfig, hparams: Hyperparameters, dataset: LoadedDataset, split: Split
    ) -> Fitted:
        """The type head and every piece of :data:`FITTERS` on the training split's frozen
        features (regularisation by grouped inner CV there); the validation split is left
        for the temperature, folded into the type head's weights."""
        from trainer.heads import fit_linear_head  # noqa: PLC0415

        backbone = str(config.backbone)
        features = pretrained_features(backbone, hparams, dataset)
        train, val = split.train, split.val
        labels, groups = dataset.labels, dataset.groups
        head = fit_linear_head(
            features[train], labels[train], groups[train], len(dataset.classes), seed=config.seed
        )
        val_logits = head.logits(features[val])
        temperature = calibration.fit_temperature(val_logits, labels[val])
        detection = (
            detection_features(config, hparams) if config.fracture_data is not None else None
        )
        frozen = FrozenFeatures(config, hparams, dataset, split, features, detection)
        others = [o for o in (fitter(frozen) for fitter in FITTERS) if o is not None]
        pieces: list[HeadPiece] = [TypeHead(head, temperature), *(o.piece for o in others)]
        model = build_graph(config.spec, backbone, hparams, pieces)
        notes = "".join(f"; {o.note}" for o in others if o.note)
        log(
            config,
            f"fitted a linear head (C={head.c}) on {len(train)} images' {backbone} features"
            + notes,
        )
        arrays: dict[str, np.ndarray] = {}
        for piece in pieces:
            arrays.update(piece.arrays())
        # what the rebuilt model must answer on fixed images (trainer.assemble checks it)
        reference = predict_all(model, reference_images(config.spec))
        arrays.update({f"reference_{k}": v for k, v in reference.items()})
        sections: dict[str, dict[str, Any]] = {}
        for other in others:
            sections.update(other.sections)
        return Fitted(
            model=model,
            history={},
            best_epoch=0,
            temperature=temperature,
            val_probabilities=calibration.softmax(val_logits, temperature),
            head_arrays=arrays,
            sections=sections,
        )

    def hyperparameter_record(
        self, config: TrainConfig, hparams: Hyperparameters, search: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {
            "head": NAME,
            "backbone": config.backbone,
            "feature_taps": list(hparams.feature_taps),
            "feature_mirror": hparams.feature_mirror,
            "image_size": config.image_size,
            "seed": config.seed,
            "regularisation": "C of a logistic regression, by grouped inner 4-fold CV",
            "class_balancing": "class_weight='balanced'",
            **(
                {"fracture_data": folder_name(Path(config.fracture_data))}
                if config.fracture_data is not None
                else {}
            ),
        }

    def training_record(self, fitted: Fitted) -> dict[str, Any]:
        arrays = fitted.head_arrays
        return {
            "method": "frozen ImageNet features; logistic regression fitted by scikit-learn "
            "on the training split",
            "regularisation_c": float(arrays["head_c"]) if arrays else None,
        }


FAMILY = LinearFamily()
