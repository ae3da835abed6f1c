"""Does the 5-epoch CNN default still learn the synthetic radiographs? (about 2.5 minutes)

The default recipe is not the shipped model (that is the pretrained ``best``): it is the
quick demo of ``run.sh --synthetic``. Whether it *learns* is worth checking whenever the
CNN family, the augmentation or the synthetic generator changes, but not in every test
run, where it took 146 s of 2 cores; the suite keeps the fast checks that it trains and
exports (tests/trainer/test_cli.py). This trains it on 1,200 synthetic drawings and fails
(exit 1) below the thresholds the suite used to assert: chance is 10% top-1 and 30%
top-3; six measured runs gave 34-86% top-1 (docs/experiments.md).

Usage::

    .venv/bin/python experiments/cnn_learning_check.py [--per-class 120] [--seed 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.synth import write_dataset
from trainer.train import TrainConfig, train

#: The floor each score must reach (well above chance, well below a typical run).
THRESHOLDS = {"accuracy": 0.2, "top3_accuracy": 0.45}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=120, help="drawings per class")
    parser.add_argument("--size", type=int, default=256, help="typical drawing side (px)")
    parser.add_argument("--seed", type=int, default=3, help="the drawings' seed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cnn-learning-") as work:
        data = Path(work) / "synthetic"
        write_dataset(data, per_class=args.per_class, size=args.size, seed=args.seed)
        result = train(TrainConfig(data_dir=data, models_dir=Path(work) / "models", verbose=0))
    scores = {key: result.metrics[key] for key in THRESHOLDS}
    failed = {key: value for key, value in scores.items() if value < THRESHOLDS[key]}
    print(f"5-epoch CNN default on synthetic drawings: {scores}; floors {THRESHOLDS}")
    if failed:
        print(f"below the floor: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
