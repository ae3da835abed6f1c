"""DICOM decoding on real radiographs: viewer order, encodings, refusals and no patient data.

The expected gray levels are computed here from the DICOM standard's formulas (PS3.3
C.11.2.1.2: linear window; MONOCHROME1 shown inverted), not from pydicom, so a change in
how the module calls pydicom is caught.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import UID, JPEG2000MCLossless
from support.dicom_samples import (
    PHI_STRINGS,
    RG3,
    image_dataset,
    monochrome2_copy,
    no_network,  # noqa: F401 (fixture)
    pydicom_data_file,
    pydicom_test_file,
    rg3,
    set_invalid,
    with_phi,
    write,
)

from modelio import dicom as dicom_module
from modelio.images import (
    ACCEPTED_MEDIA_TYPES,
    ACCEPTED_SUFFIXES,
    PREPROCESSING_DESCRIPTION,
    ImageDecodeError,
    decode,
    decode_image,
    is_dicom,
)

pytestmark = pytest.mark.usefixtures("no_network")

#: JPEG 2000 lossy against the original: measured mean 0.19 and max 3 gray levels on RG3.
LOSSY_MEAN_TOLERANCE = 0.5
LOSSY_MAX_TOLERANCE = 4


def gray(data: bytes, **kwargs: int) -> np.ndarray:
    return np.asarray(decode_image(data, **kwargs), dtype=np.int16)


def windowed(stored: np.ndarray, center: float, width: float, inverted: bool) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 linear window to 0..255, then MONOCHROME1 inversion."""
    x = stored.astype(np.float64)
    out = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    out = np.clip(out, 0, 255)
    out[x <= center - 0.5 - (width - 1) / 2] = 0
    out[x > center - 0.5 + (width - 1) / 2] = 255
    out = np.rint(out)
    return (255 - out if inverted else out).astype(np.int16)


@pytest.fixture(scope="module")
def rg3_images() -> dict[str, np.ndarray]:
    return {name: gray(pydicom_data_file(name).read_bytes()) for name in RG3}


def test_four_encodings_of_one_radiograph_decode_to_nearly_the_same_pixels(
    rg3_images: dict[str, np.ndarray],
) -> None:
    original = rg3_images["RG3_UNCR.dcm"]
    assert original.shape == (1760, 1760)
    # lossless JPEG 2000 is the original, bit for bit
    np.testing.assert_array_equal(rg3_images["RG3_J2KR.dcm"], original)
    # UNCI is the lossy JPEG 2000 stored uncompressed: the same as decoding J2KI
    np.testing.assert_array_equal(rg3_images["RG3_UNCI.dcm"], rg3_images["RG3_J2KI.dcm"])
    lossy = np.abs(rg3_images["RG3_J2KI.dcm"] - original)
    assert 0 < lossy.mean() < LOSSY_MEAN_TOLERANCE
    assert lossy.max() <= LOSSY_MAX_TOLERANCE


def test_the_files_window_and_monochrome1_are_applied_as_a_viewer_does(
    rg3_images: dict[str, np.ndarray],
) -> None:
    ds = rg3()
    assert (ds.WindowCenter, ds.WindowWidth, ds.PhotometricInterpretation) == (
        550,
        1024,
        "MONOCHROME1",
    )
    expected = windowed(ds.pixel_array, 550, 1024, inverted=True)
    np.testing.assert_array_equal(rg3_images["RG3_UNCR.dcm"], expected)
    # MONOCHROME1: bone (high attenuation, low stored values) is shown bright
    assert expected.mean() > 128


def test_facts_are_the_acquisition_and_encoding_only() -> None:
    decoded = decode(pydicom_data_file("RG3_J2KI.dcm").read_bytes())
    assert decoded.image.mode == "L"
    assert decoded.notes == ()
    assert decoded.dicom is not None
    assert decoded.dicom.to_dict() == {
        "modality": "CR",
        "body_part_examined": "EXTREMITY",
        "view_position": "AP",
        "photometric_interpretation": "MONOCHROME1",
        "rows": 1760,
        "columns": 1760,
        "bits_stored": 10,
        "frames": 1,
        "transfer_syntax": "JPEG 2000 Image Compression (1.2.840.10008.1.2.4.91)",
        "windowing": "window center 550, width 1024",
    }


def test_changing_the_window_changes_the_pixels_as_the_formula_says() -> None:
    ds = rg3()
    before = gray(write(ds))
    ds.WindowCenter, ds.WindowWidth = 300, 200
    after = gray(write(ds))
    np.testing.assert_array_equal(after, windowed(ds.pixel_array, 300, 200, inverted=True))
    assert np.abs(after - before).mean() > 20  # a real change, not rounding


def test_only_the_first_of_several_windows_is_used() -> None:
    ds = rg3()
    ds.WindowCenter, ds.WindowWidth = [300, 700], [200, 400]
    np.testing.assert_array_equal(
        gray(write(ds)), windowed(ds.pixel_array, 300, 200, inverted=True)
    )


def test_monochrome2_copy_looks_the_same_as_the_monochrome1_original(
    rg3_images: dict[str, np.ndarray],
) -> None:
    copy = monochrome2_copy(rg3())
    shown = gray(write(copy))
    difference = np.abs(shown - rg3_images["RG3_UNCR.dcm"])
    assert difference.max() <= 1  # rounding of exact halves only
    assert difference.mean() < 0.01
    assert decode(write(copy)).dicom.photometric_interpretation == "MONOCHROME2"


def test_modality_lut_comes_before_the_window() -> None:
    """Stored values halved with Rescale Slope 2 / Intercept -100 and the window given in
    rescaled units: the same picture, which it is only if the rescale is applied first."""
    ds = rg3()
    stored = ds.pixel_array.astype(np.int64)
    original = gray(write(ds))
    ds.PixelData = ((stored + 100) // 2).astype(np.uint16).tobytes()  # 2 * s - 100 ~ stored
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    shown = gray(write(ds))
    assert np.abs(shown - original).max() <= 1  # the odd values lost one bit
    assert np.abs(shown - original).mean() < 0.5


def test_voi_lut_sequence_is_preferred_to_the_window() -> None:
    ds = rg3()
    entries = 1024
    table = (np.clip((np.arange(entries) - 200) / 600, 0, 1) * 4095).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [entries, 0, 12]
    item.LUTData = table.tobytes()
    item["LUTData"].VR = "OW"
    ds.VOILUTSequence = [item]  # the window (550/1024) stays in the file
    shown = gray(write(ds))
    expected = 255 - np.rint(table[ds.pixel_array] / 4095 * 255).astype(np.int16)
    np.testing.assert_array_equal(shown, expected)
    assert decode(write(ds)).dicom.windowing == "VOI LUT from the file"


def test_no_window_gives_a_percentile_window_that_ignores_a_few_hot_pixels() -> None:
    ds = rg3()
    del ds.WindowCenter, ds.WindowWidth
    clean = decode(write(ds))
    assert clean.dicom.windowing.startswith("0.5-99.5 percentile window")
    values = np.asarray(clean.image)
    assert values.min() == 0
    assert values.max() == 255
    stored = ds.pixel_array.copy()
    stored.ravel()[::997][:3000] = 1023  # 3,000 saturated pixels (0.1%)
    ds.PixelData = stored.tobytes()
    hot = np.asarray(decode_image(write(ds)), dtype=np.int16)
    untouched = stored != 1023
    assert np.abs(hot - values)[untouched].mean() < 1.0  # a min-max stretch would move all


def test_bits_stored_is_respected_unused_high_bits_are_ignored(
    rg3_images: dict[str, np.ndarray],
) -> None:
    ds = rg3()
    assert (ds.BitsAllocated, ds.BitsStored) == (16, 10)
    stored = ds.pixel_array.astype(np.uint16)
    noise = np.random.default_rng(0).integers(0, 64, stored.shape, dtype=np.uint16) << 10
    ds.PixelData = (stored | noise).tobytes()  # garbage (e.g. overlays) above bit 9
    np.testing.assert_array_equal(gray(write(ds)), rg3_images["RG3_UNCR.dcm"])


def test_bits_stored_sets_the_windows_output_range() -> None:
    """An 8-bit ramp stored in 12 of 16 bits: the window maps to 0..4095, shown 0..255."""
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (4, 1))
    ds = image_dataset(ramp, BitsStored=12, HighBit=11, WindowCenter=2048, WindowWidth=4096)
    shown = gray(write(ds))
    np.testing.assert_array_equal(shown, windowed(ramp, 2048, 4096, inverted=False))
    assert shown.min() == 0
    assert shown.max() >= 254


def test_multi_frame_gives_the_first_frame_and_a_note() -> None:
    first = np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1))
    frames = np.stack([first, 255 - first, np.zeros_like(first)])
    decoded = decode(write(image_dataset(frames, WindowCenter=128, WindowWidth=256)))
    np.testing.assert_array_equal(
        np.asarray(decoded.image, dtype=np.int16), windowed(first, 128, 256, inverted=False)
    )
    assert decoded.dicom.frames == 3
    [note] = decoded.notes
    assert note.code == "multi_frame"
    assert "3 frames" in note.message
    assert "first" in note.message


def test_rgb_dicom_becomes_an_rgb_image() -> None:
    decoded = decode(pydicom_test_file("SC_rgb_rle.dcm").read_bytes())
    assert decoded.image.mode == "RGB"
    assert decoded.dicom.photometric_interpretation == "RGB"
    assert decoded.dicom.transfer_syntax == "RLE Lossless (1.2.840.10008.1.2.5)"


def test_pixel_cap_is_checked_before_any_pixel_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = pydicom_data_file("RG3_J2KI.dcm").read_bytes()

    def must_not_decode(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("pixel data decoded before the size check")

    monkeypatch.setattr(dicom_module, "pixel_array", must_not_decode)
    with pytest.raises(ImageDecodeError) as caught:
        decode(data, max_pixels=1760 * 1760 - 1)
    assert caught.value.kind == "too_large"
    assert "1760x1760" in str(caught.value)


@pytest.mark.parametrize(
    ("uid", "named"),
    [
        (JPEG2000MCLossless, "JPEG 2000 Part 2 Multi-component Image Compression"),
        (UID("1.2.840.10008.1.2.4.102"), "MPEG-4 AVC/H.264"),
        (UID("1.2.826.0.1.3680043.9.9999.1"), "unknown transfer syntax"),
    ],
)
def test_a_transfer_syntax_no_codec_reads_is_refused_by_name(uid: UID, named: str) -> None:
    ds = rg3("RG3_J2KR.dcm")
    ds.file_meta.TransferSyntaxUID = uid
    with pytest.raises(ImageDecodeError) as caught:
        decode(write(ds))
    assert caught.value.kind == "unsupported_encoding"
    assert named in str(caught.value)
    assert str(uid) in str(caught.value)


def test_a_transfer_syntax_that_is_not_a_uid_is_not_echoed() -> None:
    ds = with_phi(rg3("RG3_J2KR.dcm"))
    original = write(ds)
    assert original.count(b"1.2.840.10008.1.2.4.90") == 1  # only in the file meta
    data = original.replace(b"1.2.840.10008.1.2.4.90", b"Quokkason^Ada^Beatrix ")
    with pytest.raises(ImageDecodeError) as caught:
        decode(data)
    assert caught.value.kind == "unsupported_encoding"
    assert "malformed transfer syntax UID" in str(caught.value)
    assert "Quokkason" not in str(caught.value)


def _without_pixel_data() -> bytes:
    ds = with_phi(rg3())
    del ds.PixelData
    return write(ds)


def _cut(name: str, length: int) -> Callable[[], bytes]:
    return lambda: pydicom_data_file(name).read_bytes()[:length]


def _pydicom_file(name: str) -> Callable[[], bytes]:
    return lambda: pydicom_test_file(name).read_bytes()


@pytest.mark.parametrize(
    ("make", "kind", "says"),
    [
        (_pydicom_file("test-SR.dcm"), "no_pixels", "SR Storage"),
        (_pydicom_file("reportsi.dcm"), "no_pixels", "no image"),
        (_pydicom_file("waveform_ecg.dcm"), "no_pixels", "Waveform"),
        (_without_pixel_data, "corrupt", "truncated"),
        (_cut("RG3_J2KR.dcm", 400_000), "corrupt", "truncated"),
        (_cut("RG3_UNCR.dcm", 3_000_000), "corrupt", "truncated"),
        (_cut("RG3_UNCR.dcm", 200), "corrupt", "truncated"),
    ],
    ids=["SR", "basic-text-SR", "ECG", "no-pixel-data", "cut-J2K", "cut-native", "cut-header"],
)
def test_objects_without_a_usable_image_are_refused_with_a_sentence(
    make, kind: str, says: str
) -> None:
    with pytest.raises(ImageDecodeError) as caught:
        decode(make())
    assert caught.value.kind == kind
    message = str(caught.value)
    assert says in message
    assert message.endswith(".")
    assert "Traceback" not in message
    assert caught.value.__cause__ is None  # pydicom's own text is not carried along
    assert caught.value.__suppress_context__ or caught.value.__context__ is None


def test_no_patient_data_in_facts_errors_warnings_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Identifying values written into the file, one of them where a coded fact is read
    (pydicom warns about it, quoting it): none comes out of the decoder."""
    caplog.set_level(logging.DEBUG)
    ds = with_phi(rg3("RG3_J2KI.dcm"))
    set_invalid(ds, "BodyPartExamined", "Quokkason^Ada")  # not a code string (VR CS)
    decoded = decode(write(ds))
    assert decoded.dicom.body_part_examined is None  # dropped, not passed on
    texts = [repr(decoded.dicom), repr(decoded.notes)]
    for broken in (_without_pixel_data(), write(ds)[:150_000]):
        with pytest.raises(ImageDecodeError) as caught:
            decode(broken)
        texts.append(str(caught.value))
    texts.append(caplog.text)
    for text in texts:
        for value in PHI_STRINGS:
            assert value not in text


def test_an_unforeseen_library_error_becomes_a_422_without_its_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fails_quoting(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("cannot handle Quokkason^Ada^Beatrix")

    monkeypatch.setattr(dicom_module, "apply_modality_lut", fails_quoting)
    with pytest.raises(ImageDecodeError) as caught:
        decode(pydicom_data_file("RG3_J2KI.dcm").read_bytes())
    assert caught.value.kind == "corrupt"
    assert "Quokkason" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    monkeypatch.setattr(dicom_module, "_frames", fails_quoting)  # outside the other guards
    with pytest.raises(ImageDecodeError) as caught:
        decode(pydicom_data_file("RG3_J2KI.dcm").read_bytes())
    assert "Quokkason" not in str(caught.value)


def test_dicom_is_recognised_by_content_not_name() -> None:
    data = pydicom_data_file("RG3_J2KI.dcm").read_bytes()
    assert is_dicom(data)
    assert not is_dicom(b"\xff\xd8\xff" + bytes(200))
    # a Part 10 file whose 128-byte preamble and marker were stripped still decodes
    stripped = data[132:]
    assert is_dicom(stripped)
    np.testing.assert_array_equal(gray(stripped), gray(data))
    # a bare dataset without file meta (no transfer syntax) is not taken as DICOM
    assert not is_dicom(pydicom_test_file("no_meta.dcm").read_bytes())
    with pytest.raises(ImageDecodeError) as caught:
        decode(pydicom_test_file("no_meta.dcm").read_bytes())
    assert caught.value.kind == "not_image"


def test_other_formats_still_go_to_pillow_without_dicom_facts() -> None:
    buffer = io.BytesIO()
    Image.new("L", (8, 6), 77).save(buffer, "PNG")
    decoded = decode(buffer.getvalue())
    assert decoded.dicom is None
    assert decoded.notes == ()
    assert decoded.image.size == (8, 6)


def test_dicom_is_listed_where_accepted_formats_are() -> None:
    assert "application/dicom" in ACCEPTED_MEDIA_TYPES
    assert {".dcm", ".dicom"} <= ACCEPTED_SUFFIXES
    assert "Window Center/Width" in PREPROCESSING_DESCRIPTION["dicom"]
