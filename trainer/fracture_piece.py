"""The fracture heads as a head piece of the pretrained-backbone family.

``python -m trainer train --data TYPES --fracture-data DETECTION --recipe best`` fits the
type head on ``TYPES`` and, on the same frozen backbone, the fracture heads
(:mod:`trainer.fracture_heads`) on ``DETECTION`` (``Fractured/`` + ``Non_fractured/``, with
a COCO file of outlines beside them). The exported graph then answers both questions in
one backbone pass (:mod:`trainer.fracture_graph`).

The thresholds that turn the probability into a finding, and the one that turns the map
into boxes, are chosen on *held-out* answers: a grouped, stratified k-fold cross-
validation of the heads on the detection data (near-duplicates never straddle a fold),
whose figures go into ``metadata.json`` → ``fracture`` beside the thresholds. The
exported heads are then fitted on all of it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelio.contract import FRACTURE_MAP, FRACTURE_PROBABILITY
from trainer import backbones, data
from trainer.config import log
from trainer.detection_data import find_coco, fractured_labels, load_outlines
from trainer.errors import TrainerError
from trainer.fracture_graph import fracture_outputs
from trainer.fracture_heads import (
    MAP_TAPS,
    POOLED_TAPS,
    FractureHeads,
    fit_fracture_heads,
    position_features,
)
from trainer.fracture_metrics import (
    auc,
    box_recall,
    nested_operating_points,
    operating_points,
    pointing_game,
)

if TYPE_CHECKING:
    from trainer.config import TrainConfig
    from trainer.model import Hyperparameters

#: Folds of the cross-validation that sets the thresholds.
THRESHOLD_FOLDS = 5
#: Images per backbone call when computing the detection set's maps.
BATCH = 8


@dataclass(frozen=True)
class DetectionFeatures:
    """The detection set through the frozen backbone: rows as in ``dataset``."""

    dataset: data.LoadedDataset
    fractured: np.ndarray  # (N,) 1 = fractured
    pooled: np.ndarray  # (N, F) the type head's pooled features (same taps, same order)
    positions: np.ndarray  # (N, h, w, C) float16, the localiser's cells
    coverage: np.ndarray  # (N, h, w) share of each cell inside an outline
    source: str  # the folder's name, for metadata


def check_taps(hparams: Hyperparameters) -> None:
    """The fracture heads read the type recipe's taps; refuse a recipe without them."""
    if tuple(hparams.feature_taps) != POOLED_TAPS:
        raise TrainerError(
            "--fracture-data needs the best recipe's feature taps "
            f"({', '.join(POOLED_TAPS)}): use --recipe best"
        )


def detection_features(
    config: TrainConfig, hparams: Hyperparameters, dataset: data.LoadedDataset | None = None
) -> DetectionFeatures:
    """Load ``config.fracture_data``, its outlines, and its maps through the backbone.

    ``dataset``: that folder already loaded (``experiments/fracture_features.py`` passes a
    subset with ``--limit``); the features of any subset are cached under their own name.
    """
    root = Path(str(config.fracture_data))
    check_taps(hparams)
    started = time.monotonic()
    if dataset is None:
        dataset = data.load(data.discover(root), config.spec)
    fractured = fractured_labels(dataset)
    coco = find_coco(root)
    if coco is None:
        raise TrainerError(
            f"no COCO outline file beside {root} (looked for *.coco.json and "
            "annotations/*.json there and one folder up): the localisation head learns "
            "where fractures are from their outlines"
        )
    cached = None if config.feature_cache is None else feature_cache_file(config, hparams, dataset)
    if cached is not None and cached.is_file():
        with np.load(cached) as stored:
            pooled, positions = stored["pooled"], stored["positions"]
    else:
        pooled, positions = _backbone_pass(config, hparams, dataset)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(f".{cached.name}.partial.npz")
            np.savez(partial, pooled=pooled, positions=positions)
            partial.replace(cached)
    outlines = load_outlines(coco, dataset.paths, positions.shape[1:3], root)
    log(
        config,
        f"fracture data: {len(fractured)} images ({int(fractured.sum())} fractured, "
        f"{int(outlines.outlined.sum())} outlined) through {config.backbone} in "
        f"{time.monotonic() - started:.0f} s",
    )
    return DetectionFeatures(
        dataset=dataset,
        fractured=fractured,
        pooled=pooled,
        positions=positions,
        coverage=outlines.coverage,
        source=folder_name(root),
    )


def feature_cache_file(
    config: TrainConfig, hparams: Hyperparameters, dataset: data.LoadedDataset
) -> Path:
    """Where ``--feature-cache`` keeps this detection set's features (``pooled`` and
    ``positions``): named by everything they depend on (the images' fingerprint and
    order, backbone, taps, mirror, input size)."""
    key = "|".join(
        [
            dataset.fingerprint,
            hashlib.sha256("\n".join(dataset.paths).encode()).hexdigest(),  # the row order
            str(config.backbone),
            ",".join(hparams.feature_taps),
            str(hparams.feature_mirror),
            f"{config.spec.height}x{config.spec.width}x{config.spec.channels}",
            ",".join(MAP_TAPS),
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return Path(str(config.feature_cache)) / f"detection-{digest}.npz"


def _backbone_pass(
    config: TrainConfig, hparams: Hyperparameters, dataset: data.LoadedDataset
) -> tuple[np.ndarray, np.ndarray]:
    """``(pooled (N, F), positions (N, h, w, C) float16)`` of every image, in batches."""
    taps = tuple(hparams.feature_taps)
    network = backbones.feature_maps(
        str(config.backbone),
        (config.spec.height, config.spec.width, config.spec.channels),
        taps,
        mirror=hparams.feature_mirror,
    )
    pooled_parts: list[np.ndarray] = []
    position_parts: list[np.ndarray] = []
    for start in range(0, len(dataset.images), BATCH):
        out = network(dataset.images[start : start + BATCH], training=False)
        maps = dict(zip(taps, out if isinstance(out, list) else [out], strict=True))
        arrays = {tap: np.asarray(m, np.float32) for tap, m in maps.items()}
        pooled_parts.append(np.concatenate([arrays[t].mean(axis=(1, 2)) for t in POOLED_TAPS], 1))
        position_parts.append(position_features(arrays, MAP_TAPS).astype(np.float16))
    return np.concatenate(pooled_parts), np.concatenate(position_parts)


def folder_name(root: Path) -> str:
    """The data folder's name for metadata; a generic ``images`` folder (FracAtlas's)
    with its parent, so the name still says which dataset it was."""
    resolved = root.resolve()
    return f"{resolved.parent.name}/{resolved.name}" if resolved.name == "images" else resolved.name


@dataclass(frozen=True)
class FracturePiece:
    """The fracture heads in the graph: ``fracture_probability`` and ``fracture_map``."""

    heads: FractureHeads

    def outputs(self, frozen: Any) -> dict[str, Any]:
        """Reads ``frozen.maps`` by ``frozen.taps`` (the backbone pass in the graph)."""
        return fracture_outputs(dict(zip(frozen.taps, frozen.maps, strict=True)), self.heads)

    def arrays(self) -> dict[str, np.ndarray]:
        return self.heads.arrays()

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FracturePiece | None:
        """None for a head.npz without fracture heads (every model before them)."""
        try:
            return cls(FractureHeads.from_arrays(arrays))
        except KeyError:
            return None


@dataclass(frozen=True)
class HeldOut:
    """Every image's answer from the fold that did not train on it."""

    scores: np.ndarray  # (N,) fracture probability
    maps: np.ndarray  # (N, h, w) fracture map
    folds: np.ndarray  # (N,) which fold held the image out


def held_out_answers(
    pooled: np.ndarray,
    positions: np.ndarray,
    coverage: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int,
    folds: int = THRESHOLD_FOLDS,
) -> HeldOut:
    """Grouped, stratified ``folds``-fold cross-validation of the heads (near-duplicate
    groups never straddle a fold); shared by training and ``experiments/fracture_cv.py``."""
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415

    out = HeldOut(
        scores=np.zeros(len(labels)),
        maps=np.zeros(coverage.shape, np.float32),
        folds=np.zeros(len(labels), int),
    )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for number, (train, val) in enumerate(splitter.split(labels, labels, groups)):
        # indices, not copies: positions[train] would be most of the largest array
        heads = fit_fracture_heads(
            pooled, positions, coverage, labels, groups, seed=seed, rows=train
        )
        probabilities, cells = heads.answer(pooled, positions, rows=val)
        out.scores[val] = probabilities
        out.maps[val] = 1.0 / (1.0 + np.exp(-cells))
        out.folds[val] = number
    return out


def cross_validate(
    features: DetectionFeatures, *, seed: int, folds: int = THRESHOLD_FOLDS
) -> tuple[dict[str, Any], HeldOut]:
    """The ``metadata.json`` → ``fracture`` block from held-out answers, and the answers.

    The thresholds shipped are chosen on all held-out answers; the sensitivity and
    specificity stated beside them are measured *nested* (each fold at thresholds chosen
    on the other folds), so they are what the rule keeps on images it was not chosen on,
    not the 95% it was chosen to give.
    """
    labels = features.fractured
    held = held_out_answers(
        features.pooled,
        features.positions,
        features.coverage,
        labels,
        features.dataset.groups,
        seed=seed,
        folds=folds,
    )
    rule_out, rule_in = operating_points(labels, held.scores)
    nested = nested_operating_points(labels, held.scores, held.folds)
    outlined = (labels == 1) & (features.coverage.reshape(len(labels), -1).max(axis=1) > 0)
    recall, region_threshold = box_recall(held.maps, features.coverage, outlined)
    measured_on = (
        f"held-out folds of grouped {folds}-fold cross-validation on {features.source} "
        f"({len(labels)} radiographs, {int(labels.sum())} fractured; fold seed {seed}); "
        "each fold at thresholds chosen on the other folds"
    )
    block = {
        "rule_out": {"threshold": round(rule_out, 4), **nested["rule_out"]},
        "rule_in": {"threshold": round(rule_in, 4), **nested["rule_in"]},
        "region_threshold": region_threshold,
        "measured_on": measured_on,
        "cross_validation": {
            "roc_auc": round(auc(labels, held.scores), 4),
            "pointing_game": round(
                pointing_game(held.maps[outlined], features.coverage[outlined]), 4
            ),
            "outlined_images": int(outlined.sum()),
            "box_recall_at_1_false_box_per_image": round(recall, 4),
        },
    }
    return block, held


def fit_fracture_piece(
    features: DetectionFeatures, *, seed: int, config: TrainConfig
) -> tuple[FracturePiece, dict[str, Any]]:
    """The thresholds by grouped CV, then the heads on all the detection data."""
    started = time.monotonic()
    block, _ = cross_validate(features, seed=seed)
    heads = fit_fracture_heads(
        features.pooled,
        features.positions,
        features.coverage,
        features.fractured,
        features.dataset.groups,
        seed=seed,
    )
    block["outputs"] = {"probability": FRACTURE_PROBABILITY, "map": FRACTURE_MAP}
    block["method"] = (
        "a per-position network (one hidden layer) on the tapped feature maps, trained on "
        "outlined cells, and a logistic regression on the pooled features, combined by a "
        "logistic regression on grouped inner-fold answers"
    )
    cv = block["cross_validation"]
    log(
        config,
        f"fracture heads: grouped-CV ROC AUC {cv['roc_auc']:.3f}, pointing game "
        f"{cv['pointing_game']:.0%} ({time.monotonic() - started:.0f} s)",
    )
    return FracturePiece(heads), block
