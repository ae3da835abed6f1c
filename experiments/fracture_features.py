"""Cache the frozen backbone's features of a fracture-detection folder (FracAtlas).

The fracture experiments (``experiments/fracture_cv.py``) fit many heads in many folds;
the backbone pass is the costly part and the same for all of them, so it runs once here,
through the trainer's own code (:func:`trainer.fracture_piece.detection_features`: the
decoding and near-duplicate groups of :mod:`trainer.data`, the exported graph's maps,
mirror-averaged as the ``best`` recipe is). The features land in the trainer's
``--feature-cache`` format, in ``--cache`` (by default the folder of ``--out``), so
``python -m trainer train --recipe best --fracture-data DIR --feature-cache CACHE``
reuses them and the experiments read exactly what training reads. ``--out`` gets the
rest, per image: the labels, groups, paths and outline coverage, and which cache file
holds the features.

    python experiments/fracture_features.py --data ../shared/datasets/fracatlas/images \
        --out /tmp/bonefrac-cache/fracatlas-lite2-352.npz

About 10 minutes for FracAtlas's 3,474 images on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from trainer import data
from trainer.config import TrainConfig
from trainer.fracture_piece import detection_features, feature_cache_file
from trainer.recipes import recipe_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Fractured/ + Non_fractured/")
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write")
    parser.add_argument(
        "--cache", type=Path, help="the trainer's --feature-cache folder (default: --out's)"
    )
    parser.add_argument("--backbone", default="efficientnet-lite2")
    parser.add_argument("--image-size", type=int, default=352)
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (tests)")
    args = parser.parse_args()

    started = time.monotonic()
    settings = recipe_settings("best")
    settings.update(backbone=args.backbone, image_size=args.image_size)
    config = TrainConfig(
        data_dir=args.data,
        models_dir=Path(os.devnull),
        fracture_data=args.data,
        feature_cache=args.cache or args.out.parent,
        **settings,
    )
    index = data.discover(args.data)
    if args.limit:
        index.samples = index.samples[: args.limit // 2] + index.samples[-args.limit // 2 :]
    dataset = data.load(index, config.spec)
    print(f"decoded {len(dataset.labels)} images in {time.monotonic() - started:.0f} s", flush=True)
    features = detection_features(config, config.hparams, dataset)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out,
        fractured=features.fractured,
        groups=dataset.groups,
        paths=np.array(dataset.paths),
        coverage=features.coverage,
        features=np.array(str(feature_cache_file(config, config.hparams, dataset).resolve())),
    )
    print(f"wrote {args.out} in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
