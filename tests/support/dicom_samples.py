"""Real DICOM radiographs from installed packages, and DICOM files built for a test.

``pydicom-data`` (dev extra) installs real computed radiographs as plain files in its
``data_store/data`` folder. They are located from the installed package's path, never
through pydicom's ``get_testdata_file`` (which may download what is missing): the tests
must not touch the network. pydicom's own small test files are read from its
``data/test_files`` folder the same way.
"""

from __future__ import annotations

import importlib.util
import io
import socket
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

#: The lower leg and ankle CR in four encodings (1760 x 1760, 10-bit, MONOCHROME1):
#: uncompressed (R: from the original; I: from the lossy JPEG 2000) and JPEG 2000
#: lossless and lossy.
RG3 = ("RG3_UNCR.dcm", "RG3_UNCI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm")

#: Identifying values written into test files; none may ever come out of the product.
PHI = {
    "PatientName": "Quokkason^Ada^Beatrix",
    "PatientID": "PID-4815162342",
    "PatientBirthDate": "19011231",
    "AccessionNumber": "ACC90210X",
    "StudyDate": "20260914",
    "OtherPatientIDs": "OPID-777-314",
}
#: The same values as they would show in text, and the RG3 files' own identifiers.
PHI_STRINGS = (
    "Quokkason",
    "Beatrix",
    "4815162342",
    "19011231",
    "ACC90210X",
    "20260914",
    "777-314",
    "CompressedSamples",
    "11RG3",
    "19790408",
    "FUJI95706",
)


def _package_folder(name: str) -> Path:
    """An installed package's folder, found without importing (running) it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"package {name} is not installed; run: bash scripts/setup.sh dev")
    return Path(next(iter(spec.submodule_search_locations)))


def pydicom_data_file(name: str) -> Path:
    """A file of PyPI ``pydicom-data`` (import name ``data_store``)."""
    path = _package_folder("data_store") / "data" / name
    assert path.is_file(), f"{name} missing from the installed pydicom-data"
    return path


def pydicom_test_file(name: str) -> Path:
    """One of the small test files that ship inside pydicom itself."""
    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    assert path.is_file(), f"{name} missing from the installed pydicom"
    return path


def read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def write(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def with_phi(ds: Dataset) -> Dataset:
    """The dataset with identifying values that tests look for in every output."""
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    return ds


def set_invalid(ds: Dataset, keyword: str, value: object) -> None:
    """Write a value its VR does not allow (pydicom warns on assignment, quoting it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setattr(ds, keyword, value)


def rg3(name: str = "RG3_UNCR.dcm") -> Dataset:
    return read(pydicom_data_file(name).read_bytes())


def monochrome2_copy(ds: Dataset) -> Dataset:
    """The MONOCHROME1 image stored the other way round: pixels inverted within Bits
    Stored, the tag changed and the window moved with the values. With DICOM's linear
    window (centre - 0.5, width - 1) the inverted window's centre is max - centre + 1."""
    top = 2 ** int(ds.BitsStored) - 1
    stored = ds.pixel_array.astype(np.int64)
    copy = ds.copy()
    copy.PixelData = (top - stored).astype(np.uint16).tobytes()
    copy.PhotometricInterpretation = "MONOCHROME2"
    copy.WindowCenter = top - float(ds.WindowCenter) + 1
    return copy


def image_dataset(pixels: np.ndarray, **attributes: Any) -> Dataset:
    """A Secondary Capture dataset holding ``pixels`` (frames, rows, columns) or (rows,
    columns), uint8 or uint16, uncompressed."""
    pixels = np.asarray(pixels)
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    rows, columns = pixels.shape[-2:]
    bits = 8 * pixels.dtype.itemsize
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.astype(f"<u{pixels.dtype.itemsize}").tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to open a network connection (a download would be one)."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a DICOM test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
