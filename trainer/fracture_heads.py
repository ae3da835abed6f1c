"""Is a bone broken, and where: the two fracture heads on the frozen backbone's features.

Both read the features the type head already computes (one backbone pass serves every
head) and are fitted by scikit-learn on cached features, then folded into the exported
graph as fixed layers (:mod:`trainer.fracture_graph`), so the service still runs one
TFLite model with no TensorFlow.

- :class:`Localiser` answers *where*: a small per-position network (one hidden layer) on
  the tapped feature maps, the coarse maps repeated up to the finest grid (22 x 22 at
  352 px). Cells inside a fracture outline are its positives; every cell of an intact
  bone, and cells of a fractured one well away from its outlines, its negatives. A linear
  probe on the same cells found the fracture on 58% of images (issue 17's first try): a
  fracture is a local pattern that no single direction of the features separates.
- :class:`Detector` answers *whether*: a class-balanced logistic regression on the pooled
  features (as the type head, regularisation by grouped inner CV), combined with the
  localiser's strongest cell. The pooled view sees the whole bone, the map a small
  fracture that pooling dilutes; the combined logit is ``pooled_weight * pooled +
  peak_weight * peak + bias``, its weights fitted by a logistic regression on *held-out*
  (grouped inner-fold) answers of both, so neither view is trusted for what it
  memorised.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The pooled taps the image-level detector reads: the type recipe's, so one pass serves both.
POOLED_TAPS: tuple[str, ...] = ("stage4", "stage5", "stage6", "stage7", "head")
#: The taps the per-position localiser reads, coarse ones repeated to the finest grid.
MAP_TAPS: tuple[str, ...] = ("stage4", "stage5", "stage6", "stage7")
#: A cell is a positive when outlines cover at least this share of it.
POSITIVE_COVERAGE = 0.2
#: Negative cells drawn per image (all positives are kept): enough for the
#: localiser, and it bounds the fit's memory on a 22 x 22 grid of 768 features.
NEGATIVES_PER_IMAGE = 24
#: Hidden units of the per-position network.
HIDDEN_UNITS = 64
#: L2 penalty of the per-position network (scikit-learn's alpha).
LOCALISER_ALPHA = 1e-2
LOCALISER_EPOCHS = 12
#: Inner folds that give the held-out answers the two views are combined on.
INNER_FOLDS = 4


def _single_blas_thread() -> Any:
    from threadpoolctl import threadpool_limits  # noqa: PLC0415 - scikit-learn's own dependency

    return threadpool_limits(limits=1, user_api="blas")


def position_features(maps: dict[str, np.ndarray], taps: tuple[str, ...] = MAP_TAPS) -> np.ndarray:
    """``(N, H, W, C)``: the taps' maps, each repeated up to the finest grid, side by side.

    The exported graph does the same with ``UpSampling2D`` (nearest), so a cell here is
    a cell there.
    """
    height = max(maps[t].shape[1] for t in taps)
    width = max(maps[t].shape[2] for t in taps)
    parts = []
    for tap in taps:
        m = maps[tap]
        fy, fx = height // m.shape[1], width // m.shape[2]
        parts.append(np.repeat(np.repeat(m, fy, axis=1), fx, axis=2) if (fy, fx) != (1, 1) else m)
    return np.concatenate(parts, axis=-1)


@dataclass(frozen=True)
class Localiser:
    """cell logit = relu(((x - mean) / scale) @ w1 + b1) @ w2 + b2."""

    mean: np.ndarray  # (C,)
    scale: np.ndarray  # (C,)
    w1: np.ndarray  # (C, hidden)
    b1: np.ndarray  # (hidden,)
    w2: np.ndarray  # (hidden,)
    b2: float

    def logits(
        self, features: np.ndarray, chunk: int = 4096, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Cell logits of ``(..., C)`` features, shaped ``(...)``.

        ``rows``: only these images of ``(N, ..., C)`` features, shaped ``(len(rows),
        ...)``; their cells are gathered a chunk at a time, never copied whole (the
        features of a fold's images are gigabytes).
        """
        flat = features.reshape(-1, features.shape[-1])
        shape = features.shape[:-1]
        cells: np.ndarray | None = None  # the rows' cells, as rows of ``flat``
        if rows is not None:
            per_image = int(np.prod(shape[1:], dtype=np.int64))
            rows = np.asarray(rows, dtype=np.int64)
            cells = (rows[:, None] * per_image + np.arange(per_image)).ravel()
            shape = (len(rows), *shape[1:])
        total = len(flat) if cells is None else len(cells)
        out = np.empty(total, np.float32)
        for start in range(0, total, chunk):
            stop = start + chunk
            part = flat[start:stop] if cells is None else flat[cells[start:stop]]
            z = (part.astype(np.float32) - self.mean) / self.scale
            out[start:stop] = np.maximum(z @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2
        return out.reshape(shape)


def _cells(
    features: np.ndarray,
    coverage: np.ndarray,
    fractured: np.ndarray,
    seed: int,
    images: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The training cells: every outlined cell, and a sample of clearly negative ones.

    Cells of a fractured image next to its outline are left out: outlines are drawn by
    hand around a line, and the cell beside one is neither clearly broken nor intact.
    Fractured images without outlines give no cells at all. ``images``: only these rows
    of the three arrays (default all); only the chosen cells are copied.
    """
    rng = np.random.default_rng(seed)
    images = np.arange(len(features)) if images is None else np.asarray(images, np.int64)
    coverage, fractured = coverage[images], fractured[images]
    positive = (coverage >= POSITIVE_COVERAGE) & (fractured[:, None, None] == 1)
    touched = coverage > 0
    near = touched.copy()
    near[:, 1:, :] |= touched[:, :-1, :]
    near[:, :-1, :] |= touched[:, 1:, :]
    near[:, :, 1:] |= touched[:, :, :-1]
    near[:, :, :-1] |= touched[:, :, 1:]
    outlined = touched.any(axis=(1, 2))
    usable_negative = (fractured == 0) | outlined
    rows, labels = [], []
    cells = coverage.shape[1] * coverage.shape[2]
    for image, source in enumerate(images):
        pos = np.flatnonzero(positive[image].ravel())
        rows.extend(source * cells + pos)
        labels.extend([1] * len(pos))
        if usable_negative[image]:
            candidates = np.flatnonzero(~near[image].ravel())
            take = rng.choice(candidates, min(NEGATIVES_PER_IMAGE, len(candidates)), replace=False)
            rows.extend(source * cells + take)
            labels.extend([0] * len(take))
    flat = features.reshape(-1, features.shape[-1])
    return flat[np.asarray(rows, dtype=np.int64)].astype(np.float32), np.asarray(labels)


def fit_localiser(
    features: np.ndarray,
    coverage: np.ndarray,
    fractured: np.ndarray,
    *,
    seed: int = 0,
    rows: np.ndarray | None = None,
) -> Localiser:
    """Fit the per-position network on ``(N, H, W, C)`` features and ``(N, H, W)`` outlines
    (``rows``: of these images only, default all).

    Positives are few (a fracture covers a handful of the 484 cells), so they are
    repeated until they weigh as much as the negatives: scikit-learn's network takes
    no class weights.
    """
    from sklearn.neural_network import MLPClassifier  # noqa: PLC0415

    x, y = _cells(features, coverage, fractured, seed, rows)
    if y.sum() == 0 or (y == 0).sum() == 0:
        raise ValueError("the localiser needs outlined fracture cells and intact cells")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    z = (x - mean) / scale
    repeat = max(1, round((y == 0).sum() / max(1, (y == 1).sum())))
    index = np.concatenate([np.flatnonzero(y == 0), np.repeat(np.flatnonzero(y == 1), repeat)])
    network = MLPClassifier(
        hidden_layer_sizes=(HIDDEN_UNITS,),
        alpha=LOCALISER_ALPHA,
        batch_size=256,
        learning_rate_init=1e-3,
        max_iter=LOCALISER_EPOCHS,
        shuffle=True,
        random_state=seed,
    )
    with _single_blas_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a fixed epoch budget is the point
        network.fit(z[index], y[index])
    return Localiser(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        w1=network.coefs_[0].astype(np.float32),
        b1=network.intercepts_[0].astype(np.float32),
        w2=network.coefs_[1][:, 0].astype(np.float32),
        b2=float(network.intercepts_[1][0]),
    )


def peak(cell_logits: np.ndarray) -> np.ndarray:
    """Each image's strongest cell logit: ``(N, H, W)`` -> ``(N,)``."""
    return cell_logits.reshape(len(cell_logits), -1).max(axis=1)


@dataclass(frozen=True)
class Detector:
    """fracture logit = pooled_weight * pooled + peak_weight * peak + bias, where
    pooled = ((x - mean) / scale) @ weights + pooled_bias."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    weights: np.ndarray  # (F,)
    pooled_bias: float
    pooled_weight: float
    peak_weight: float
    bias: float
    c: float  # the pooled logistic's regularisation, by grouped inner CV

    def pooled_logits(self, pooled: np.ndarray) -> np.ndarray:
        return ((pooled - self.mean) / self.scale) @ self.weights + self.pooled_bias

    def logits(self, pooled: np.ndarray, peaks: np.ndarray) -> np.ndarray:
        return (
            self.pooled_weight * self.pooled_logits(pooled) + self.peak_weight * peaks + self.bias
        )

    def probabilities(self, pooled: np.ndarray, peaks: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(pooled, peaks)))


def _pooled_head(
    pooled: np.ndarray,
    fractured: np.ndarray,
    groups: np.ndarray,
    seed: int,
    c: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """(mean, scale, weights, bias, C) of the binary logistic on pooled features; C by
    grouped inner CV unless given."""
    from trainer.heads import C_GRID, fit_linear_head  # noqa: PLC0415

    grid = C_GRID if c is None else (c,)
    head = fit_linear_head(pooled, fractured, groups, 2, seed=seed, c_grid=grid)
    weights = head.weights[:, 1] - head.weights[:, 0]
    bias = float(head.bias[1] - head.bias[0])
    return head.mean, head.scale, weights, bias, head.c


def _inner_folds(labels: np.ndarray, groups: np.ndarray, seed: int) -> list[Any]:
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415

    folds = min(INNER_FOLDS, len(np.unique(groups)))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(labels, labels, groups))


@dataclass(frozen=True)
class FractureHeads:
    """Both heads, as fitted together."""

    detector: Detector
    localiser: Localiser

    def answer(
        self, pooled: np.ndarray, positions: np.ndarray, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities (N,), cell logits (N, H, W))`` of images (``rows``: of these
        images of ``pooled`` and ``positions`` only, default all)."""
        if rows is not None:
            pooled = pooled[rows]
        cells = self.localiser.logits(positions, rows=rows)
        return self.detector.probabilities(pooled, peak(cells)), cells

    def arrays(self) -> dict[str, np.ndarray]:
        """For head.npz: every fitted number, under ``fracture_`` names."""
        out = {f"fracture_loc_{k}": np.asarray(v) for k, v in self.localiser.__dict__.items()}
        out.update({f"fracture_det_{k}": np.asarray(v) for k, v in self.detector.__dict__.items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FractureHeads:
        """The inverse of :meth:`arrays`; KeyError when head.npz has no fracture heads."""
        loc = {k: arrays[f"fracture_loc_{k}"] for k in Localiser.__dataclass_fields__}
        det = {k: arrays[f"fracture_det_{k}"] for k in Detector.__dataclass_fields__}
        return cls(
            detector=Detector(
                **{k: (float(v) if v.ndim == 0 else v) for k, v in det.items()}  # type: ignore[arg-type]
            ),
            localiser=Localiser(
                **{k: (float(v) if v.ndim == 0 else v) for k, v in loc.items()}  # type: ignore[arg-type]
            ),
        )


def fit_fracture_heads(
    pooled: np.ndarray,
    positions: np.ndarray,
    coverage: np.ndarray,
    fractured: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int = 0,
    rows: np.ndarray | None = None,
) -> FractureHeads:
    """Fit the localiser and the detector on one training set (see the module's text).

    The combination weights come from held-out answers of grouped inner folds: each
    inner fold fits both views on the rest and answers its own images; a logistic
    regression of the label on those two answers gives the weights.

    ``rows``: the training images, as rows of the arrays (default all). The folds pass
    indices rather than copies: ``positions`` is the largest array by far (gigabytes on
    FracAtlas), and a copy per fold and inner fold would hold it up to three times.
    """
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    rows = np.arange(len(fractured)) if rows is None else np.asarray(rows, np.int64)
    labels, label_groups = fractured[rows], groups[rows]
    mean, scale, weights, bias, c = _pooled_head(pooled[rows], labels, label_groups, seed)
    held_pooled = np.zeros(len(rows))
    held_peak = np.zeros(len(rows))
    for inner_train, inner_val in _inner_folds(labels, label_groups, seed):
        train, val = rows[inner_train], rows[inner_val]
        fold_mean, fold_scale, fold_weights, fold_bias, _ = _pooled_head(
            pooled[train], fractured[train], groups[train], seed, c
        )
        held_pooled[inner_val] = ((pooled[val] - fold_mean) / fold_scale) @ fold_weights + fold_bias
        localiser = fit_localiser(positions, coverage, fractured, seed=seed, rows=train)
        held_peak[inner_val] = peak(localiser.logits(positions, rows=val))
    with _single_blas_thread():
        stack = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
        stack.fit(np.stack([held_pooled, held_peak], axis=1), labels)
    return FractureHeads(
        detector=Detector(
            mean=mean,
            scale=scale,
            weights=weights,
            pooled_bias=bias,
            pooled_weight=float(stack.coef_[0, 0]),
            peak_weight=float(stack.coef_[0, 1]),
            bias=float(stack.intercept_[0]),
            c=c,
        ),
        localiser=fit_localiser(positions, coverage, fractured, seed=seed, rows=rows),
    )
