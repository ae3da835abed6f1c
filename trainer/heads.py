"""What is fitted on top of frozen pretrained features: a linear head and an OOD model.

Both are plain numpy arrays fitted with scikit-learn, then written into the exported
Keras graph as fixed layers (:mod:`trainer.families.linear`), so the model
still takes raw pixels and the service needs nothing but the TFLite runtime.

- :class:`LinearHead`: standardised features -> multinomial logistic regression, its
  regularisation chosen by grouped inner cross-validation (near-duplicates never sit on
  both sides of an inner split either).
- :class:`OodModel`: how far an image's features lie from the training radiographs', a
  Mahalanobis distance in the top principal components plus the residual outside them
  (a shrunk covariance: 1,000 images cannot estimate a full 2,000-wide one). Its
  threshold is the ``quantile`` of distances of *held-out* training images (grouped
  inner folds), so about ``1 - quantile`` of new radiographs like the training ones are
  flagged, not the far larger share an in-sample threshold would give.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

#: The regularisation strengths the inner CV chooses from (inverse, scikit-learn's C).
C_GRID: tuple[float, ...] = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
INNER_FOLDS = 4
#: Principal components the OOD distance keeps; the rest is one residual term. Measured on
#: the real split (docs/experiments.md): 16 components warned on blank images and on more
#: synthetic drawings than 32-128 did, for the same share of held-out radiographs.
OOD_COMPONENTS = 16
#: Share of held-out training radiographs whose distance stays under the threshold
#: (0.95 flagged 3-4% of held-out radiographs, within the 5% target; 0.98 about 1%).
OOD_QUANTILE = 0.95


@dataclass(frozen=True)
class LinearHead:
    """logits = ((x - mean) / scale) @ weights + bias."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    weights: np.ndarray  # (F, classes)
    bias: np.ndarray  # (classes,)
    c: float  # the regularisation the inner CV chose

    def logits(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale) @ self.weights + self.bias

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        logits = self.logits(features)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class OodModel:
    """distance = mean over features of whitened squared deviation (about 1 in-distribution)."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    components: np.ndarray  # (F, K) orthonormal
    inverse_variance: np.ndarray  # (K,)
    residual_inverse_variance: float
    threshold: float = float("inf")

    def distances(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean) / self.scale
        projected = z @ self.components
        inside = (projected**2) @ self.inverse_variance
        outside = np.sum(z**2, axis=1) - np.sum(projected**2, axis=1)
        return (inside + outside * self.residual_inverse_variance) / z.shape[1]


def _single_blas_thread() -> Any:
    """A context with BLAS on one thread: measured, scikit-learn's solvers ran ~60x slower
    with multi-threaded BLAS on a busy 2-core machine. (An environment variable would
    come too late: numpy's BLAS has started by the time this module runs.)"""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415 - scikit-learn's own dependency

    return threadpool_limits(limits=1, user_api="blas")


def _standardiser(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    return mean, np.where(scale > 1e-6, scale, 1.0)


def _inner_folds(
    labels: np.ndarray, groups: np.ndarray, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415

    folds = min(INNER_FOLDS, len(np.unique(groups)))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # small classes: "fewer members than n_splits"
        warnings.simplefilter("ignore", UserWarning)
        return list(splitter.split(labels, labels, groups))


def _logistic(c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    return LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=seed)


def fit_linear_head(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    num_classes: int,
    *,
    seed: int = 0,
    c_grid: tuple[float, ...] = C_GRID,
) -> LinearHead:
    """Class-balanced logistic regression; C by grouped inner CV log-loss, then refit."""
    mean, scale = _standardiser(features)
    z = (features - mean) / scale
    with _single_blas_thread():
        c = (
            _choose_c(z, labels, groups, num_classes, seed=seed, c_grid=c_grid)
            if len(c_grid) > 1
            else c_grid[0]
        )
        model = _logistic(c, seed).fit(z, labels)
    weights = np.zeros((features.shape[1], num_classes))
    bias = np.full(num_classes, -30.0)  # a class absent from training is never chosen
    coef, intercept = model.coef_, model.intercept_
    if coef.shape[0] == 1:
        # two classes: scikit-learn keeps one row, the log-odds of its second class;
        # as two softmax rows it is half of that each way (the same probabilities)
        coef = np.concatenate([-coef / 2.0, coef / 2.0])
        intercept = np.concatenate([-intercept / 2.0, intercept / 2.0])
    weights[:, model.classes_] = coef.T
    bias[model.classes_] = intercept
    return LinearHead(mean, scale, weights, bias, c)


def _choose_c(
    z: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    num_classes: int,
    *,
    seed: int,
    c_grid: tuple[float, ...],
) -> float:
    """The C of ``c_grid`` with the lowest held-out log-loss over grouped inner folds."""
    losses = np.zeros(len(c_grid))
    for inner_train, inner_val in _inner_folds(labels, groups, seed):
        for i, c in enumerate(c_grid):
            model = _logistic(c, seed).fit(z[inner_train], labels[inner_train])
            p = np.full((len(inner_val), num_classes), 1e-6)
            p[:, model.classes_] = np.clip(model.predict_proba(z[inner_val]), 1e-6, 1.0)
            losses[i] -= np.mean(np.log(p[np.arange(len(inner_val)), labels[inner_val]]))
    return c_grid[int(np.argmin(losses))]


def fit_ood(
    features: np.ndarray,
    groups: np.ndarray | None = None,
    seed: int = 0,
    sources: np.ndarray | None = None,
) -> OodModel:
    """Fit the distance on ``features``; with ``groups``, also its held-out threshold.

    With ``sources`` (which dataset each row came from), the threshold is the largest of
    the sources' own quantiles, so that no source has more than ``1 - quantile`` of its
    held-out radiographs flagged: one quantile over the union let the larger dataset set
    it, and flagged 16-21% of the smaller one's (measured on the shipped pair).
    """
    with _single_blas_thread():
        model = _fit_distance(features)
        if groups is None:
            return model
        held_out = np.zeros(len(features))
        labels = np.zeros(len(features), dtype=int) if sources is None else sources
        for inner_train, inner_val in _inner_folds(labels, groups, seed):
            fitted = _fit_distance(features[inner_train])
            held_out[inner_val] = fitted.distances(features[inner_val])
    if sources is None:
        return replace(model, threshold=float(np.quantile(held_out, OOD_QUANTILE)))
    quantiles = [np.quantile(held_out[sources == s], OOD_QUANTILE) for s in np.unique(sources)]
    return replace(model, threshold=float(max(quantiles)))


def _fit_distance(features: np.ndarray) -> OodModel:
    mean, scale = _standardiser(features)
    z = (features - mean) / scale
    _, singular, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    variance = singular**2 / max(len(z) - 1, 1)
    # At most half the images' worth of components: with as many components as images the
    # training set has no residual at all, and any new image would look infinitely far.
    k = max(1, min(OOD_COMPONENTS, (len(z) - 1) // 2, len(variance)))
    total = float(np.sum(z.var(axis=0)))
    average = total / z.shape[1]
    residual = max((total - float(variance[:k].sum())) / max(z.shape[1] - k, 1), 1e-3 * average)
    floor = residual  # shrink small components towards the residual level
    return OodModel(
        mean=mean,
        scale=scale,
        components=vt[:k].T.copy(),
        inverse_variance=1.0 / (variance[:k] + floor),
        residual_inverse_variance=1.0 / (residual + floor),
    )
