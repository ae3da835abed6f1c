"""Cache the frozen backbone's feature maps of a fracture-detection folder (FracAtlas).

The fracture experiments (``experiments/fracture_cv.py``) fit many heads in many folds;
the backbone pass is the costly part and the same for all of them, so it runs once here:
the images are decoded and grouped by :mod:`trainer.data` (the trainer's own loading),
the maps come from :func:`trainer.backbones.feature_maps` (the exported graph's own
maps, mirror-averaged as the shipped recipe is), and everything lands in one ``.npz``.

    python experiments/fracture_features.py --data ../shared/datasets/fracatlas/images \
        --out /tmp/bonefrac-cache/fracatlas-lite2-352.npz

About 10 minutes for FracAtlas's 3,474 images on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from modelio.images import InputSpec
from trainer import data
from trainer.detection_data import find_coco, fractured_labels, load_outlines
from trainer.fracture_heads import MAP_TAPS, POOLED_TAPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Fractured/ + Non_fractured/")
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write")
    parser.add_argument("--backbone", default="efficientnet-lite2")
    parser.add_argument("--image-size", type=int, default=352)
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (tests)")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    from trainer.backbones import feature_maps  # noqa: PLC0415

    started = time.monotonic()
    spec = InputSpec(args.image_size, args.image_size, 1)
    index = data.discover(args.data)
    if args.limit:
        index.samples = index.samples[: args.limit // 2] + index.samples[-args.limit // 2 :]
    dataset = data.load(index, spec)
    fractured = fractured_labels(dataset)
    print(f"decoded {len(dataset.labels)} images in {time.monotonic() - started:.0f} s", flush=True)
    taps = tuple(dict.fromkeys((*POOLED_TAPS, *MAP_TAPS)))
    network = feature_maps(args.backbone, (spec.height, spec.width, 1), taps, mirror=True)
    maps: dict[str, list[np.ndarray]] = {tap: [] for tap in taps}
    for start in range(0, len(dataset.images), args.batch):
        out = network(dataset.images[start : start + args.batch], training=False)
        out = out if isinstance(out, list) else [out]
        for tap, value in zip(taps, out, strict=True):
            maps[tap].append(np.asarray(value, np.float32))
        if start % (args.batch * 50) == 0:
            print(f"  {start} images, {time.monotonic() - started:.0f} s", flush=True)
    arrays = {f"map_{tap}": np.concatenate(parts) for tap, parts in maps.items()}
    pooled = np.concatenate([arrays[f"map_{tap}"].mean(axis=(1, 2)) for tap in POOLED_TAPS], 1)
    grid = arrays[f"map_{MAP_TAPS[0]}"].shape[1:3]
    coco = find_coco(args.data)
    outlines = load_outlines(coco, dataset.paths, grid) if coco else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out,
        pooled=pooled.astype(np.float32),
        fractured=fractured,
        groups=dataset.groups,
        paths=np.array(dataset.paths),
        coverage=outlines.coverage if outlines else np.zeros((len(fractured), *grid)),
        **{k: v.astype(np.float16) for k, v in arrays.items()},
    )
    print(f"wrote {args.out} in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
