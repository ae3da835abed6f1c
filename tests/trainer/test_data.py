"""Data guards: layouts are found, broken files skipped, near-duplicates never split."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from support.dicom_samples import image_dataset
from support.dicom_samples import write as dicom_bytes
from support.fake_radiographs import radiograph, write

from modelio.images import InputSpec
from trainer import data, synth
from trainer.errors import TrainerError

SPEC = InputSpec(16, 16, 1)


def test_kaggle_layout_nested_with_spaces_and_capitals(tmp_path: Path) -> None:
    root = tmp_path / "Bone Break Classification" / "Bone Break Classification"
    for number, name in enumerate(["Hairline Fracture", "Avulsion fracture"]):
        for split in ("Train", "Test"):
            write(root / name / split / f"img{number}_{split}.jpg", radiograph(number))
    index = data.discover(tmp_path)
    assert index.classes == ["Avulsion fracture", "Hairline Fracture"]
    hints = {(s.class_name, s.split_hint) for s in index.samples}
    assert hints == {(c, h) for c in index.classes for h in ("train", "test")}


def test_split_first_layout(tmp_path: Path) -> None:
    for split in ("train", "TEST"):
        for number, name in enumerate(["Oblique fracture", "Spiral Fracture", "greenstick"]):
            write(tmp_path / split / name / f"{number}.png", radiograph(number))
    index = data.discover(tmp_path)
    assert index.classes == ["greenstick", "Oblique fracture", "Spiral Fracture"]
    assert {s.split_hint for s in index.samples} == {"train", "test"}


def test_plain_class_folders(tmp_path: Path) -> None:
    for number, name in enumerate(["a b", "C d"]):
        write(tmp_path / "deep" / "er" / name / f"{number}.bmp", radiograph(number))
    index = data.discover(tmp_path)
    assert index.classes == ["a b", "C d"]
    assert all(s.split_hint is None for s in index.samples)


def test_broken_and_foreign_files_are_skipped_and_listed(tmp_path: Path) -> None:
    for number, name in enumerate(["one", "two"]):
        for k in range(3):
            write(tmp_path / name / f"{k}.png", radiograph(10 * number + k))
    (tmp_path / "one" / "notes.txt").write_text("not an image")
    (tmp_path / "two" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    loaded = data.load(data.discover(tmp_path), SPEC)
    assert len(loaded.labels) == 6
    reasons = dict(loaded.skipped)
    assert set(reasons) == {str(Path("one/notes.txt")), str(Path("two/broken.jpg"))}
    assert all(reasons.values())


def test_dicom_files_are_found_by_suffix_or_content_and_decoded(tmp_path: Path) -> None:
    """``.dcm`` files, and DICOM exports without an extension or named by a UID, are
    images; other files without an image suffix are still skipped."""
    names = {"one": ("a.dcm", "IM0001", "1.2.826.0.1.3680043.2.1143.7"), "two": ("b.DICOM",)}
    arrays = {}
    for number, (folder, files) in enumerate(names.items()):
        for k, name in enumerate(files):
            pixels = np.asarray(radiograph(10 * number + k), dtype=np.uint16) * 16  # 12-bit
            ds = image_dataset(pixels, BitsStored=12, HighBit=11)
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / name).write_bytes(dicom_bytes(ds))
            arrays[f"{folder}/{name}"] = pixels
    write(tmp_path / "two" / "c.png", radiograph(99))
    (tmp_path / "two" / "README").write_text("not an image, no suffix")
    loaded = data.load(data.discover(tmp_path), InputSpec(48, 48, 1))
    assert sorted(Path(p).name for p in loaded.paths) == sorted(
        ["a.dcm", "IM0001", "1.2.826.0.1.3680043.2.1143.7", "b.DICOM", "c.png"]
    )
    assert dict(loaded.skipped) == {str(Path("two/README")): "not an image file"}
    # decoded through the shared DICOM path: the 12-bit values percentile-windowed to 8 bit
    image = loaded.images[[Path(p).name for p in loaded.paths].index("IM0001")][..., 0]
    expected = arrays["one/IM0001"].astype(np.float64)
    assert np.corrcoef(image.ravel(), expected.ravel())[0, 1] > 0.99
    assert image.min() == 0
    assert image.max() == 255


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: root, "no images found"),
        (lambda root: write(root / "only" / "x.png", radiograph(0)).parents[1], "one class"),
    ],
)
def test_unusable_folders_raise_one_line_errors(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(TrainerError, match=message) as caught:
        data.discover(make(tmp_path))
    assert "\n" not in str(caught.value)


def test_roboflow_stem() -> None:
    assert data.roboflow_stem("F1-large4_jpg.rf.4252b8d03c32b5e5299279de5619cc.jpg") == "f1-large4"
    assert data.roboflow_stem("35765-galleyfig1a_jpeg.rf62790773a110.jpg") == "35765-galleyfig1a"
    assert data.roboflow_stem("Inkedcalc_png.rf.ff05_LI.jpg") == "calc"
    assert data.roboflow_stem("plain.jpg") is None


def test_flipped_copy_has_near_zero_hash_distance() -> None:
    image = radiograph(3, size=64)
    original = data.dhash_variants(image)
    flipped = data.dhash_variants(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    other = data.dhash_variants(radiograph(4, size=64))
    assert data.hash_distance(flipped[np.newaxis], original[0])[0] <= 2
    assert data.hash_distance(other[np.newaxis], original[0])[0] > data.PHASH_MAX_DISTANCE


def _recoded(image: Image.Image) -> Image.Image:
    """The same figure saved again elsewhere: resized, contrast lifted, JPEG quality 40."""
    copy = ImageEnhance.Contrast(image.resize((200, 200), Image.Resampling.BICUBIC)).enhance(1.15)
    buffer = io.BytesIO()
    copy.save(buffer, "JPEG", quality=40)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("L")


@pytest.mark.parametrize("seed", [0, 4])
def test_recoded_copy_the_hash_misses_is_caught_by_thumbnail_correlation(seed: int) -> None:
    original = synth.render("Oblique fracture", np.random.default_rng(seed)).convert("L")
    copy = _recoded(original)
    other = synth.render("Oblique fracture", np.random.default_rng(seed + 100)).convert("L")
    hash_gap = data.hash_distance(
        data.dhash_variants(copy)[np.newaxis], data.dhash_variants(original)[0]
    )
    assert hash_gap[0] > data.PHASH_MAX_DISTANCE  # the hash alone would let it leak

    thumbnails = np.stack([data.thumbnail(image) for image in (original, copy, other)])

    assert data.correlated_pairs(thumbnails) == [(0, 1)]  # a distinct render of one class is not


def test_recoded_copy_in_the_test_folder_joins_its_original(tmp_path: Path) -> None:
    for label, name in enumerate(["Oblique fracture", "Spiral Fracture"]):
        for k in range(4):
            image = synth.render(name, np.random.default_rng(10 * label + k))
            write(tmp_path / name / "Train" / f"{k}.png", image)
    original = synth.render("Oblique fracture", np.random.default_rng(0)).convert("L")
    write(tmp_path / "Oblique fracture" / "Test" / "copy.jpg", _recoded(original))

    loaded = data.load(data.discover(tmp_path), SPEC)
    group_of = dict(zip(loaded.paths, loaded.groups, strict=True))

    assert group_of["Oblique fracture/Test/copy.jpg"] == group_of["Oblique fracture/Train/0.png"]
    assert len(set(loaded.groups.tolist())) == 8


def test_grouped_split_keeps_near_duplicates_on_one_side(duplicated_dataset: Path) -> None:
    loaded = data.load(data.discover(duplicated_dataset), SPEC)
    assert loaded.groups_merged >= 24  # every Roboflow pair, plus the flipped copies
    for seed in range(5):
        split = data.grouped_split(loaded, val_fraction=0.25, test_fraction=0.25, seed=seed)
        sides = [set(loaded.groups[rows].tolist()) for rows in (split.train, split.val, split.test)]
        assert not sides[0] & sides[1]
        assert not sides[0] & sides[2]
        assert not sides[1] & sides[2]
        everything = np.sort(np.concatenate([split.train, split.val, split.test]))
        np.testing.assert_array_equal(everything, np.arange(len(loaded.labels)))
        for rows in (split.val, split.test):  # stratified: every class on every side
            assert set(loaded.labels[rows].tolist()) == {0, 1, 2}


def test_leaky_test_images_move_to_train(tmp_path: Path) -> None:
    for label in range(2):
        for k in range(6):
            write(tmp_path / f"c{label}" / "Train" / f"{k}.png", radiograph(10 * label + k))
        write(tmp_path / f"c{label}" / "Test" / "fresh.png", radiograph(500 + label))
        write(tmp_path / f"c{label}" / "Test" / "copy.png", radiograph(10 * label))  # leak
    loaded = data.load(data.discover(tmp_path), SPEC)
    split = data.grouped_split(loaded, val_fraction=0.3, seed=0)
    assert split.moved_to_train == 2
    assert sorted(Path(loaded.paths[i]).name for i in split.test) == ["fresh.png", "fresh.png"]


def test_fingerprint_depends_on_content_not_names(tmp_path: Path) -> None:
    for label in range(2):
        write(tmp_path / "a" / f"c{label}" / "x.png", radiograph(label))
        write(tmp_path / "b" / f"c{label}" / "renamed.png", radiograph(label))
    first = data.load(data.discover(tmp_path / "a"), SPEC).fingerprint
    second = data.load(data.discover(tmp_path / "b"), SPEC).fingerprint
    assert first == second
    write(tmp_path / "b" / "c0" / "renamed.png", radiograph(7))
    assert data.load(data.discover(tmp_path / "b"), SPEC).fingerprint != first


def test_given_validation_folders_are_used_minus_leaks(tmp_path: Path) -> None:
    for label in range(2):
        for k in range(5):
            write(tmp_path / "train" / f"c{label}" / f"{k}.png", radiograph(10 * label + k))
        write(tmp_path / "valid" / f"c{label}" / "v.png", radiograph(700 + label))
        write(tmp_path / "valid" / f"c{label}" / "leak.png", radiograph(10 * label + 1))
        write(tmp_path / "test" / f"c{label}" / "t.png", radiograph(800 + label))
    loaded = data.load(data.discover(tmp_path), SPEC)
    split = data.grouped_split(loaded, seed=0)
    assert sorted(Path(loaded.paths[i]).name for i in split.val) == ["v.png", "v.png"]
    assert sorted(Path(loaded.paths[i]).name for i in split.test) == ["t.png", "t.png"]
    assert split.moved_to_train == 2
    assert len(split.train) == 12
