"""How often an exported model's OOD score warns, on radiographs and on things that are not.

Runs a model version the way the service does (its TFLite copy, the shared decoding) on:

- real radiographs: every image of ``--data`` (for the shipped model, its own training
  split, so "held-in"; held-out rates come from ``trainer crossval``, which reports the
  share of each held-out fold that is flagged);
- scikit-learn's two sample photos in gray, plain black / gray / white images, uniform and
  Gaussian noise, and synthetic drawings from :mod:`trainer.synth`: none is a radiograph,
  so every one should be warned.

Usage::

    .venv/bin/python experiments/ood_check.py --model models/bone-fracture/1 --data DIR
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelio import artifact
from modelio.images import InputSpec, decode_image, to_array
from service.runtime import OOD_OUTPUT, load_predictor
from trainer import data
from trainer.synth import CLASS_NAMES, render


def not_radiographs(seed: int = 0, drawings: int = 50) -> Iterator[tuple[str, Image.Image]]:
    """(kind, image) pairs that are not radiographs."""
    for name in ("china.jpg", "flower.jpg"):
        yield "photo (gray)", Image.fromarray(load_sample_image(name)).convert("L")
    for value in (0, 127, 255):
        yield "blank", Image.new("L", (400, 300), value)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        yield "uniform noise", Image.fromarray(rng.integers(0, 256, (300, 300), np.uint8))
        gauss = np.clip(rng.normal(127, 40, (300, 300)), 0, 255).astype(np.uint8)
        yield "gaussian noise", Image.fromarray(gauss)
    for i in range(drawings):
        drawing = render(CLASS_NAMES[i % len(CLASS_NAMES)], np.random.default_rng(seed + i), 256)
        yield "synthetic drawing", drawing


def scores(model_dir: Path, images: list[Image.Image]) -> np.ndarray:
    """The OOD score of each image, through the model's TFLite copy."""
    spec = InputSpec.from_dict(artifact.read_metadata(model_dir)["input"])
    predictor = load_predictor(model_dir)
    out = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pixels = to_array(decode_image(buffer.getvalue()), spec)[None]
        answer = predictor.run(pixels)
        if OOD_OUTPUT not in answer:
            sys.exit(f"{model_dir} has no {OOD_OUTPUT} output: only pretrained models do")
        out.append(float(answer[OOD_OUTPUT][0]))
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="models/<name>/<N>")
    parser.add_argument("--data", type=Path, help="a folder of real radiographs")
    args = parser.parse_args()
    rows: list[tuple[str, np.ndarray]] = []
    if args.data:
        paths = [sample.path for sample in data.discover(args.data).samples]
        images = [Image.open(path) for path in paths]
        rows.append((f"real radiographs in {args.data.name}", scores(args.model, images)))
    kinds: dict[str, list[Image.Image]] = {}
    for kind, image in not_radiographs():
        kinds.setdefault(kind, []).append(image)
    rows += [(kind, scores(args.model, images)) for kind, images in kinds.items()]
    print(f"{'images':40s} {'n':>5s} {'warned':>8s} {'median score':>13s} {'min':>7s}")
    for kind, values in rows:
        print(
            f"{kind:40s} {len(values):5d} {np.mean(values > 1.0):8.1%} "
            f"{np.median(values):13.2f} {values.min():7.2f}"
        )


if __name__ == "__main__":
    main()
