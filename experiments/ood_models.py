"""Which out-of-distribution model to ship: held-out radiographs against non-radiographs.

On the mirror-averaged Lite2 features of ``best`` (cached by ``pretrained_features.py``):
three grouped 80/20 splits of the real images; each OOD model is fitted on the 80% (its
threshold from grouped inner folds there, as the trainer does) and scored on the held-out
20% (share flagged: should stay under 5%) and on ``ood_check.py``'s non-radiographs (share
flagged: should be all). Compares the PCA + residual distance of ``trainer.heads`` at
several sizes and quantiles with a cosine k-nearest-neighbour distance.

Usage::

    .venv/bin/python experiments/ood_models.py --data DIR [--cache experiments/.cache]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ood_check import not_radiographs
from pretrained_features import SETTINGS, columns, extract

from modelio.images import InputSpec, decode_image, to_array
from trainer import heads
from trainer.backbones import feature_extractor
from trainer.predict import predict

SETTING = "lite2-352"
#: (name, fit(train features, train groups, seed) -> score function, threshold)
Scorer = Callable[[np.ndarray], np.ndarray]


def pca_model(components: int, quantile: float) -> Callable[..., tuple[Scorer, float]]:
    def fit(train: np.ndarray, groups: np.ndarray, seed: int) -> tuple[Scorer, float]:
        heads.OOD_COMPONENTS, heads.OOD_QUANTILE = components, quantile
        ood = heads.fit_ood(train, groups, seed)
        return ood.distances, ood.threshold

    return fit


def knn_model(k: int, quantile: float) -> Callable[..., tuple[Scorer, float]]:
    def distances(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        mean, scale = train.mean(axis=0), train.std(axis=0) + 1e-6
        a = (train - mean) / scale
        b = (test - mean) / scale
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        return 1.0 - np.sort(b @ a.T, axis=1)[:, -k]

    def fit(train: np.ndarray, groups: np.ndarray, seed: int) -> tuple[Scorer, float]:
        held = np.zeros(len(train))
        for inner_train, inner_val in heads._inner_folds(np.zeros(len(train), int), groups, seed):
            held[inner_val] = distances(train[inner_train], train[inner_val])
        return (lambda test: distances(train, test)), float(np.quantile(held, quantile))

    return fit


MODELS = {
    **{
        f"PCA {c} + residual, {q:.0%} quantile": pca_model(c, q)
        for c, q in ((128, 0.98), (32, 0.98), (16, 0.98), (8, 0.98), (16, 0.95), (32, 0.95))
    },
    **{f"cosine {k}-NN, 95% quantile": knn_model(k, 0.95) for k in (1, 5)},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache", default="experiments/.cache")
    args = parser.parse_args()
    cached = extract(args, SETTING)
    cols = columns(SETTING, SETTINGS[SETTING][2])
    real = (cached["plain"][:, cols] + cached["mirrored"][:, cols]) / 2
    groups = cached["groups"]
    _, size, taps = SETTINGS[SETTING]
    spec = InputSpec(size, size, 1)
    kinds, pixels = [], []
    for kind, image in not_radiographs():
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        kinds.append(kind)
        pixels.append(to_array(decode_image(buffer.getvalue()), spec))
    extractor = feature_extractor("efficientnet-lite2", (size, size, 1), taps, mirror=True)
    probes, kinds = predict(extractor, np.stack(pixels)), np.array(kinds)
    names = sorted(set(kinds))
    print(f"{'OOD model':34s} {'held-out real':>13s} " + " ".join(f"{n:>17s}" for n in names))
    for name, fit in MODELS.items():
        held_out, flagged = [], {n: [] for n in names}
        for seed in range(3):
            splitter = GroupShuffleSplit(1, test_size=0.2, random_state=seed)
            train, test = next(splitter.split(real, groups=groups))
            score, threshold = fit(real[train], groups[train], seed)
            held_out.append(np.mean(score(real[test]) > threshold))
            warned = score(probes) > threshold
            for n in names:
                flagged[n].append(np.mean(warned[kinds == n]))
        print(
            f"{name:34s} {np.mean(held_out):13.1%} "
            + " ".join(f"{np.mean(flagged[n]):17.0%}" for n in names),
            flush=True,
        )


if __name__ == "__main__":
    main()
