"""Fracture-detection data: which folder means "fractured", and where the outlines are.

A detection folder holds two class folders, one for fractured and one for intact bones,
spelled as FracAtlas does (``Fractured/``, ``Non_fractured/``) or in the generic ways
people name them (``fracture``/``normal``, ``positive``/``negative``, ...). Everything
else about the images (decoding, near-duplicate groups, skipped files) is
:mod:`trainer.data`'s, so a detection set is loaded and grouped exactly like a type set.

Outlines come from a COCO file beside the images (FracAtlas ships
``annotations/fracture_masks.coco.json``): polygons in each image's pixel coordinates,
matched to the images by file name. They are rasterised to the feature grid the
localisation head works on, as the share of each cell the outlines cover, because the
model sees the image squeezed to a square (aspect ratio not kept) and a cell of the grid
is a fixed fraction of the image's width and height.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from trainer.data import LoadedDataset
from trainer.errors import TrainerError

#: Folder names (case, spaces, dashes and underscores ignored) that mean "fractured".
FRACTURED_NAMES = frozenset({"fractured", "fracture", "fractures", "broken", "positive"})
#: Folder names that mean "no fracture".
INTACT_NAMES = frozenset(
    {
        "nonfractured",
        "notfractured",
        "unfractured",
        "nofracture",
        "normal",
        "intact",
        "negative",
    }
)
#: Where a COCO file is looked for, relative to the data folder and to its parent.
COCO_GLOBS = ("*.coco.json", "annotations/*.json")


def _key(name: str) -> str:
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def detection_role(class_name: str) -> int | None:
    """1 for a "fractured" folder name, 0 for an "intact" one, None for anything else."""
    key = _key(class_name)
    if key in FRACTURED_NAMES:
        return 1
    if key in INTACT_NAMES:
        return 0
    return None


def is_detection_layout(classes: list[str]) -> bool:
    """True when the class folders are exactly one fractured and one intact kind."""
    roles = [detection_role(c) for c in classes]
    return len(classes) == 2 and sorted(r for r in roles if r is not None) == [0, 1]


def fractured_labels(dataset: LoadedDataset) -> np.ndarray:
    """1 where the image sits in the fractured folder, 0 in the intact one."""
    if not is_detection_layout(dataset.classes):
        raise TrainerError(
            "fracture data needs two folders, one for fractured and one for intact bones "
            "(e.g. Fractured/ and Non_fractured/, or fracture/ and normal/); found "
            + ", ".join(repr(c) for c in dataset.classes)
        )
    role = np.array([detection_role(c) for c in dataset.classes], dtype=np.int64)
    return role[dataset.labels]


def find_coco(root: Path) -> Path | None:
    """The COCO annotation file beside a detection folder's images, if there is one."""
    root = Path(root)
    for base in (root, root.parent):
        for pattern in COCO_GLOBS:
            for candidate in sorted(base.glob(pattern)):
                if candidate.is_file():
                    return candidate
    return None


@dataclass(frozen=True)
class Outlines:
    """Fracture outlines on the localisation grid, row for row with a dataset."""

    coverage: np.ndarray  # (N, h, w) float32: share of each cell inside an outline
    outlined: np.ndarray  # (N,) bool: the image has at least one outline
    boxes: list[list[tuple[float, float, float, float]]]  # per image, relative x0 y0 x1 y1


#: EXIF orientation -> the transpose that shows the image upright (as Pillow's
#: ``ImageOps.exif_transpose`` does): the outlines are in the stored frame, the images
#: the model learns from are upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(path: Path) -> int:
    try:
        with Image.open(path) as image:
            return int(image.getexif().get(0x0112, 1))
    except (OSError, ValueError):
        return 1


def load_outlines(
    coco_file: Path, paths: list[str], grid: tuple[int, int], root: Path | None = None
) -> Outlines:
    """Rasterise the COCO polygons of every image in ``paths`` (matched by file name).

    With ``root`` (the folder ``paths`` are relative to), an image stored rotated (EXIF
    orientation) has its outlines turned upright with it, as the decoder turns the image.
    """
    try:
        coco = json.loads(Path(coco_file).read_text(encoding="utf-8"))
        images = {int(i["id"]): i for i in coco["images"]}
        annotations = coco["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainerError(f"{coco_file} is not a readable COCO annotation file: {exc}") from exc
    polygons: dict[str, list[list[float]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for annotation in annotations:
        info = images.get(int(annotation.get("image_id", -1)))
        if info is None:
            continue
        name = Path(str(info["file_name"])).name
        sizes[name] = (int(info["width"]), int(info["height"]))
        segmentation = annotation.get("segmentation")
        if isinstance(segmentation, list):
            polygons.setdefault(name, []).extend(
                [float(v) for v in poly] for poly in segmentation if len(poly) >= 6
            )
    height, width = grid
    coverage = np.zeros((len(paths), height, width), np.float32)
    outlined = np.zeros(len(paths), bool)
    boxes: list[list[tuple[float, float, float, float]]] = []
    for row, path in enumerate(paths):
        name = Path(path).name
        found = polygons.get(name, [])
        image_boxes: list[tuple[float, float, float, float]] = []
        if found:
            size = sizes[name]
            canvas = Image.new("L", size, 0)
            draw = ImageDraw.Draw(canvas)
            for poly in found:
                points = list(zip(poly[0::2], poly[1::2], strict=False))
                draw.polygon(points, fill=255)
                xs, ys = np.array(poly[0::2]), np.array(poly[1::2])
                image_boxes.append(
                    (
                        float(xs.min() / size[0]),
                        float(ys.min() / size[1]),
                        float(xs.max() / size[0]),
                        float(ys.max() / size[1]),
                    )
                )
            turn = _UPRIGHT.get(_orientation(Path(root) / path)) if root is not None else None
            if turn is not None:
                canvas = canvas.transpose(turn)
            small = canvas.resize((width, height), Image.Resampling.BOX)
            coverage[row] = np.asarray(small, np.float32) / 255.0
            outlined[row] = True
        boxes.append(image_boxes)
    return Outlines(coverage=coverage, outlined=outlined, boxes=boxes)
