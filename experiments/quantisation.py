"""float32 vs float16 vs int8 (dynamic range) TFLite copies of a recipe, in grouped CV.

For each grouped fold, the recipe is trained as the trainer trains it, its SavedModel is
converted three ways, and the held-out radiographs go through each TFLite copy on
ai-edge-litert (the service's runtime). Prints, per variant: file size, median latency
per image (one thread, batch 1, as the service runs it), top-1 / top-3 over the folds,
and the largest probability difference from float32.

Usage::

    .venv/bin/python experiments/quantisation.py --data DIR [--recipe best] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelio import contract
from trainer import data, evaluate, export
from trainer.config import TrainConfig
from trainer.crossval import grouped_folds
from trainer.families import fit
from trainer.recipes import recipe_settings

VARIANTS = ("float32", "float16", "int8 dynamic range")


def convert(saved_model: Path, variant: str) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model), signature_keys=["serving_default"]
    )
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def run_tflite(content: bytes, images: np.ndarray) -> tuple[np.ndarray, float]:
    """Probabilities of every image, one at a time, and the median seconds per image."""
    runner = Interpreter(model_content=content, num_threads=1).get_signature_runner()
    rows, seconds = [], []
    for i in range(len(images)):
        started = time.perf_counter()
        rows.append(runner(images=images[i : i + 1])[contract.PROBABILITIES])
        seconds.append(time.perf_counter() - started)
    return np.concatenate(rows), float(np.median(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--recipe", default="best")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    config = TrainConfig(
        data_dir=args.data,
        models_dir=Path(os.devnull),
        seed=args.seed,
        verbose=0,
        **recipe_settings(args.recipe),
    )
    dataset = data.load(data.discover(args.data), config.spec)
    scores: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    sizes: dict[str, int] = {}
    latency: dict[str, list[float]] = {v: [] for v in VARIANTS}
    drift: dict[str, float] = dict.fromkeys(VARIANTS, 0.0)
    for number, split in enumerate(grouped_folds(dataset, args.folds, 0.15, args.seed), 1):
        fitted = fit(config, config.hparams, dataset, split)
        images, labels = dataset.images[split.test], dataset.labels[split.test]
        with tempfile.TemporaryDirectory() as tmp:
            export._write_saved_model(fitted.model, config.spec, Path(tmp))
            reference = None
            for variant in VARIANTS:
                content = convert(Path(tmp), variant)
                sizes[variant] = len(content)
                probabilities, seconds = run_tflite(content, images)
                latency[variant].append(seconds)
                if reference is None:
                    reference = probabilities
                drift[variant] = max(
                    drift[variant], float(np.max(np.abs(probabilities - reference)))
                )
                metrics = evaluate.compute_metrics(labels, probabilities, dataset.classes)
                scores[variant].append((metrics["accuracy"], metrics["top3_accuracy"]))
        print(
            f"fold {number}: " + "  ".join(f"{v} {scores[v][-1][0]:.3f}" for v in VARIANTS),
            flush=True,
        )
    print(f"\n{args.recipe}, grouped {args.folds}-fold CV, fold seed {args.seed}")
    print(
        f"{'variant':20s} {'MB':>6s} {'ms/image':>9s} {'top-1':>14s} {'top-3':>7s} {'max |dp|':>9s}"
    )
    for variant in VARIANTS:
        top1 = [s[0] for s in scores[variant]]
        top3 = [s[1] for s in scores[variant]]
        print(
            f"{variant:20s} {sizes[variant] / 2**20:6.1f} "
            f"{1000 * float(np.median(latency[variant])):9.1f} "
            f"{np.mean(top1):.3f} ± {np.std(top1):.3f} {np.mean(top3):7.3f} "
            f"{drift[variant]:9.4f}"
        )


if __name__ == "__main__":
    main()
