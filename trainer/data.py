"""Find labelled radiographs in a folder, load them, group near-duplicates and split.

Accepted layouts, at any depth below the folder the user names (folder names keep their
spaces and capitalisation; class names are the folder names as written):

* Kaggle's ``<Class>/Train/*.jpg`` and ``<Class>/Test/*.jpg``
* ``train/<Class>/*`` and ``test/<Class>/*`` (also ``val``/``valid``/``validation``)
* plain ``<Class>/*``

Images are files with an image suffix (``.jpg``, ``.png``, ``.dcm``, ...) and DICOM files
under any name: PACS exports often have no suffix, or a UID as their name.

Near-duplicates (Roboflow exports several augmented copies of one source image) are
grouped so that a group never straddles a split: same Roboflow source stem, identical
bytes, a perceptual hash within a few bits, or strongly correlated thumbnails (the last
two under any flip or quarter turn).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from modelio.images import (
    ACCEPTED_SUFFIXES,
    ImageDecodeError,
    InputSpec,
    decode_image,
    is_dicom,
    to_array,
)
from trainer.errors import TrainerError

SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "val": "val",
    "valid": "val",
    "validation": "val",
}
IGNORED_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
#: Bytes read from a file without an image suffix to see whether it is DICOM (the
#: preamble and the ``DICM`` marker).
DICOM_SNIFF_BYTES = 132
#: Difference hashes are DHASH_SIDE**2 bits; two images whose hashes differ in at most
#: PHASH_MAX_DISTANCE bits (under some flip or turn) are one group. Measured on the real
#: training split: unrelated radiographs sit near 128 bits apart, copies of one figure under
#: different names within a few bits (552 groups at 6 bits, 532 at 12); on synthetic images
#: 12 bits chained unrelated renders into a group of 286, 6 bits into at most 10.
DHASH_SIDE = 16
PHASH_MAX_DISTANCE = 6
#: The hash misses copies that were re-encoded, resized or lightly retouched: smooth,
#: low-contrast radiographs flip many of its bits (measured: copies of one figure under
#: two names 8-20 bits apart). So two images are also one group when their 64x64 gray
#: thumbnails correlate at THUMB_MIN_CORRELATION or more, and so do their details (the
#: thumbnail minus its blur) at DETAIL_MIN_CORRELATION, under some flip or turn. On the
#: real training split this found 79 images whose copy sat in another group (42 pairs):
#: grouped CV had been leaking (552 groups become 512). The detail test keeps distinct
#: images of one layout apart: the synthetic renders all share one template and correlate
#: at 0.95 or more by layout alone, which chained 177 of them into one group without it.
THUMB_SIDE = 64
THUMB_MIN_CORRELATION = 0.96
DETAIL_MIN_CORRELATION = 0.85
DETAIL_BLUR_RADIUS = 8
_ROBOFLOW_STEM = re.compile(r"^(?P<stem>.+?)_(?:jpe?g|png|webp|bmp|gif|tiff?)\.rf", re.IGNORECASE)


@dataclass(frozen=True)
class Sample:
    """One image file: where it is, its class name and the split its folders name, if any."""

    path: Path
    class_name: str
    split_hint: str | None


@dataclass
class DatasetIndex:
    """What :func:`discover` found: classes in output order, samples and skipped files."""

    root: Path
    classes: list[str]
    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class LoadedDataset:
    """Decoded model inputs with everything the split and the report need."""

    classes: list[str]
    paths: list[str]
    images: np.ndarray  # (N, H, W, C) float32 0..255
    labels: np.ndarray  # (N,) int
    split_hints: list[str | None]
    groups: np.ndarray  # (N,) int, near-duplicate group id
    fingerprint: str
    skipped: list[tuple[str, str]]
    groups_merged: int  # images that joined another image's group


def _split_of(folder_name: str) -> str | None:
    return SPLIT_ALIASES.get(folder_name.strip().lower())


def discover(root: Path) -> DatasetIndex:
    """Walk ``root`` and label every image file by its class folder."""
    root = Path(root)
    if not root.exists():
        raise TrainerError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise TrainerError(f"data folder {root} is not a folder")
    spellings: dict[str, str] = {}  # casefolded class name -> first spelling seen
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name.lower() in IGNORED_FILES or any(
            part.startswith(".") for part in path.relative_to(root).parts
        ):
            continue
        relative = str(path.relative_to(root))
        if path.suffix.lower() not in ACCEPTED_SUFFIXES and not _starts_like_dicom(path):
            skipped.append((relative, "not an image file"))
            continue
        folder = path.parent
        split = _split_of(folder.name) if folder != root else None
        if split is not None:  # <Class>/Train/x.jpg
            folder = folder.parent
        elif folder != root:  # train/<Class>/x.jpg or <Class>/x.jpg
            split = _split_of(folder.parent.name)
        if folder == root or root not in folder.parents:
            skipped.append((relative, "not inside a class folder"))
            continue
        class_name = spellings.setdefault(folder.name.casefold(), folder.name)
        samples.append(Sample(path, class_name, split))
    if not samples:
        raise TrainerError(
            f"no images found under {root}; expected class folders such as "
            "<Class>/Train/*.jpg, train/<Class>/*.jpg or <Class>/*.jpg"
        )
    classes = sorted(set(spellings.values()), key=str.casefold)
    if len(classes) < 2:
        raise TrainerError(
            f"found only one class ({classes[0]}) under {root}; need at least two class folders"
        )
    return DatasetIndex(root=root, classes=classes, samples=samples, skipped=skipped)


def _starts_like_dicom(path: Path) -> bool:
    """A DICOM file under any name; reads 132 bytes, only of files the suffix did not
    already accept (few in an image folder)."""
    try:
        with path.open("rb") as file:
            return is_dicom(file.read(DICOM_SNIFF_BYTES))
    except OSError:
        return False


def roboflow_stem(filename: str) -> str | None:
    """The source image's stem in Roboflow's ``<stem>_<ext>.rf.<hash>.jpg`` export names."""
    match = _ROBOFLOW_STEM.match(filename)
    return match.group("stem").lower().removeprefix("inked") if match else None


def dhash_variants(image: Image.Image) -> np.ndarray:
    """256-bit difference hashes under the eight flips and quarter turns, packed (8, 32)."""
    gray = image.convert("L")
    hashes = []
    for transpose in (None, *Image.Transpose):
        variant = gray if transpose is None else gray.transpose(transpose)
        side = DHASH_SIDE
        small = np.asarray(
            variant.resize((side + 1, side), Image.Resampling.BILINEAR), dtype=np.float32
        )
        hashes.append(np.packbits(small[:, 1:] > small[:, :-1]))
    return np.stack(hashes)


def thumbnail(image: Image.Image) -> np.ndarray:
    """The image as THUMB_SIDE x THUMB_SIDE gray pixels (aspect ignored), for near-duplicates."""
    small = image.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.uint8)


def _detail(thumbnails: np.ndarray) -> np.ndarray:
    """Each thumbnail minus its Gaussian blur: edges and texture, not the overall layout."""
    blur = ImageFilter.GaussianBlur(DETAIL_BLUR_RADIUS)
    return np.stack(
        [t.astype(np.float32) - np.asarray(Image.fromarray(t).filter(blur)) for t in thumbnails]
    )


def _standardised(images: np.ndarray) -> np.ndarray:
    """Rows of zero mean and unit norm, so that a dot product is a correlation."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    flat -= flat.mean(axis=1, keepdims=True)
    return flat / (np.linalg.norm(flat, axis=1, keepdims=True) + 1e-6)


def _symmetries(images: np.ndarray) -> Iterable[np.ndarray]:
    """The stack under each of the 8 flips and quarter turns (views, not copies)."""
    for turns in range(4):
        turned = np.rot90(images, turns, axes=(1, 2))
        yield turned
        yield turned[:, :, ::-1]


def correlated_pairs(thumbnails: np.ndarray, chunk: int = 256) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, that look like copies of one image: thumbnails and
    details both correlated above their thresholds under one same flip or turn. Each
    flip or turn is standardised once; rows are compared a chunk at a time, so memory
    stays at ``chunk x N`` for large folders."""
    details = _detail(thumbnails)
    reference, reference_detail = _standardised(thumbnails), _standardised(details)
    pairs: set[tuple[int, int]] = set()
    for turned, turned_detail in zip(_symmetries(thumbnails), _symmetries(details), strict=True):
        variant, variant_detail = _standardised(turned), _standardised(turned_detail)
        for start in range(0, len(thumbnails), chunk):
            rows = slice(start, start + chunk)
            copies = (reference[rows] @ variant.T >= THUMB_MIN_CORRELATION) & (
                reference_detail[rows] @ variant_detail.T >= DETAIL_MIN_CORRELATION
            )
            for i, j in zip(*np.nonzero(copies), strict=True):
                if start + i < j:
                    pairs.add((start + int(i), int(j)))
    return sorted(pairs)


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, first: int, second: int) -> None:
        self.parent[self.find(first)] = self.find(second)


_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint16)


def hash_distance(hashes: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Smallest Hamming distance of each (8, 32) hash stack to one packed hash."""
    return _POPCOUNT[hashes ^ reference].sum(axis=-1).min(axis=-1)


def group_near_duplicates(
    stems: list[str | None], digests: list[str], hashes: np.ndarray, thumbnails: np.ndarray
) -> np.ndarray:
    """Group ids such that near-duplicates share one (union of the four signals)."""
    count = len(stems)
    union = _UnionFind(count)
    for key_list in (stems, digests):
        first_seen: dict[str, int] = {}
        for index, key in enumerate(key_list):
            if key is None:
                continue
            union.union(index, first_seen.setdefault(key, index))
    for index in range(count):
        distances = hash_distance(hashes[index + 1 :], hashes[index, 0])
        for offset in np.flatnonzero(distances <= PHASH_MAX_DISTANCE):
            union.union(index, index + 1 + int(offset))
    for first, second in correlated_pairs(thumbnails):
        union.union(first, second)
    roots = [union.find(index) for index in range(count)]
    ids = {root: number for number, root in enumerate(dict.fromkeys(roots))}
    return np.array([ids[root] for root in roots], dtype=np.int64)


@dataclass(frozen=True)
class _Decoded:
    pixels: np.ndarray  # model input
    digest: str  # sha256 of the file
    hashes: np.ndarray  # dhash_variants
    thumbnail: np.ndarray  # for correlated_pairs


def _read(sample: Sample, spec: InputSpec) -> _Decoded | str:
    try:
        data = sample.path.read_bytes()
        image = decode_image(data)
    except ImageDecodeError as exc:
        return str(exc)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    except Exception as exc:  # one strange file must never end a training run
        return f"could not be decoded: {type(exc).__name__}: {exc}"
    return _Decoded(
        pixels=to_array(image, spec),
        digest=hashlib.sha256(data).hexdigest(),
        hashes=dhash_variants(image),
        thumbnail=thumbnail(image),
    )


def load(index: DatasetIndex, spec: InputSpec, workers: int = 4) -> LoadedDataset:
    """Decode every sample (skipping broken files) and group near-duplicates."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda s: _read(s, spec), index.samples))
    skipped = list(index.skipped)
    kept: list[tuple[Sample, _Decoded]] = []
    for sample, result in zip(index.samples, results, strict=True):
        if isinstance(result, str):
            skipped.append((str(sample.path.relative_to(index.root)), result))
        else:
            kept.append((sample, result))
    present = sorted({s.class_name for s, _ in kept}, key=str.casefold)
    if len(present) < 2:
        raise TrainerError(
            f"fewer than two classes have readable images under {index.root} "
            f"({len(skipped)} files skipped)"
        )
    classes = [c for c in index.classes if c in present]
    class_ids = {name: number for number, name in enumerate(classes)}
    relative = [str(s.path.relative_to(index.root)) for s, _ in kept]
    digests = [r.digest for _, r in kept]
    groups = group_near_duplicates(
        [roboflow_stem(s.path.name) for s, _ in kept],
        digests,
        np.stack([r.hashes for _, r in kept]),
        np.stack([r.thumbnail for _, r in kept]),
    )
    fingerprint = hashlib.sha256(
        "\n".join(
            sorted(f"{s.class_name}\t{d}" for (s, _), d in zip(kept, digests, strict=True))
        ).encode()
    ).hexdigest()
    return LoadedDataset(
        classes=classes,
        paths=relative,
        images=np.stack([r.pixels for _, r in kept]),
        labels=np.array([class_ids[s.class_name] for s, _ in kept], dtype=np.int64),
        split_hints=[s.split_hint for s, _ in kept],
        groups=groups,
        fingerprint=fingerprint,
        skipped=skipped,
        groups_merged=len(kept) - len(np.unique(groups)),
    )


@dataclass(frozen=True)
class Split:
    """Row indices of each side; ``moved_to_train`` counts given held-out images that had a
    near-duplicate on the training side and were moved there."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    moved_to_train: int = 0


def carve(
    candidates: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``candidates`` into (rest, carved): stratified by class, whole groups only."""
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415

    # Tiny datasets: fewer folds (a larger share carved) rather than a class-less fold.
    largest_class = int(np.bincount(labels[candidates]).max())
    folds = max(2, min(round(1 / fraction), largest_class))
    if len(np.unique(groups[candidates])) < folds or largest_class < 2:
        raise TrainerError(
            f"too few distinct images ({len(np.unique(groups[candidates]))}) to split off "
            f"{fraction:.0%} for validation/test; add images"
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits"
        warnings.simplefilter("ignore", UserWarning)
        rest, carved = next(splitter.split(candidates, labels[candidates], groups[candidates]))
    return candidates[rest], candidates[carved]


def grouped_split(
    dataset: LoadedDataset, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> Split:
    """Train/validation/test indices with every near-duplicate group on one side.

    Test and validation folders given by the data are kept, except that an image with a
    near-duplicate on the training side is moved to training (it would leak); a side the
    folders do not give is carved out, stratified by class, whole groups only.
    """
    everything = np.arange(len(dataset.labels))
    hints = np.array(dataset.split_hints, dtype=object)
    held = {side: hints == side for side in ("test", "val")}
    training_side = ~(held["test"] | held["val"])
    moved = 0
    if training_side.any():
        training_groups = list(set(dataset.groups[training_side].tolist()))
        for side in ("test", "val"):
            leaky = held[side] & np.isin(dataset.groups, training_groups)
            moved += int(leaky.sum())
            held[side] &= ~leaky
        in_test = list(set(dataset.groups[held["test"]].tolist()))
        shared = held["val"] & np.isin(dataset.groups, in_test)
        moved += int(shared.sum())  # a group given both as val and test: train instead
        held["val"] &= ~shared
    else:  # only held-out folders: treat everything as unsplit
        held = {side: np.zeros(len(everything), bool) for side in held}
    rest = everything[~(held["test"] | held["val"])]
    if held["test"].any():
        test = everything[held["test"]]
    else:
        rest, test = carve(rest, dataset.labels, dataset.groups, test_fraction, seed)
    if held["val"].any():
        train, val = rest, everything[held["val"]]
    else:
        train, val = carve(rest, dataset.labels, dataset.groups, val_fraction, seed + 1)
    return Split(train=train, val=val, test=test, moved_to_train=moved)


def class_counts(labels: Iterable[int], classes: list[str]) -> dict[str, int]:
    """Images per class name, zero for a class with none."""
    counts = Counter(int(label) for label in labels)
    return {name: counts.get(number, 0) for number, name in enumerate(classes)}


def describe(root: Path, dataset: LoadedDataset) -> str:
    """One sentence on what a model was trained on, for /models, /classes and the page.

    Synthetic drawings (``trainer synth`` names every file ``synth_*``) are called that,
    so nobody mistakes a demo model for one that has seen a radiograph.
    """
    count = f"{len(dataset.labels)} images in {len(dataset.classes)} classes"
    if dataset.paths and all(Path(p).name.startswith("synth_") for p in dataset.paths):
        return f"{count} of synthetic drawings (trainer synth), not real radiographs"
    return f"{count} from the folder '{Path(root).resolve().name}'"
