"""DICOM uploads reduced to their image before they are kept (``BONEFRAC_STORE_IMAGES``).

A DICOM file carries the patient's name, id, birth date, the institution, accession
numbers and dates; none of that may reach the records. Rather than deleting the
identifiers one knows of (a deny list always misses a private tag), the stored copy is
built from an allow list: the elements needed to decode and display the image the same
way (:mod:`modelio.dicom`), and the coded acquisition facts the answer already shows.
Identifiers burned into the pixels cannot be removed here: a file that declares them
(Burned In Annotation = YES) is not kept at all.
"""

from __future__ import annotations

import io
import warnings

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid

#: Elements kept: image pixel module, modality and VOI LUTs, and coded acquisition facts.
KEPT = (
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "PresentationLUTShape",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "LossyImageCompression",
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "ImageLaterality",
    "BurnedInAnnotation",
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
)
#: Secondary Capture: what the stored copy claims to be (it is no longer the original).
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


class NotKeptError(ValueError):
    """This upload is not stored (unreadable, or identifiers burned into its pixels)."""


def deidentified(data: bytes) -> bytes:
    """A DICOM file holding only :data:`KEPT` elements of ``data``, with new UIDs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # pydicom raises many types; its texts may quote values
        raise NotKeptError("unreadable DICOM") from exc
    if str(source.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        raise NotKeptError("identifiers burned into the pixels (Burned In Annotation = YES)")
    syntax = getattr(source.file_meta, "TransferSyntaxUID", None)
    if syntax is None or ("PixelData" not in source and "FloatPixelData" not in source):
        raise NotKeptError("no image or no transfer syntax")
    clean = Dataset()
    for keyword in KEPT:
        if keyword in source:
            clean[keyword] = source[keyword]
    clean.SOPClassUID = SECONDARY_CAPTURE
    clean.SOPInstanceUID = generate_uid()
    clean.StudyInstanceUID = generate_uid()
    clean.SeriesInstanceUID = generate_uid()
    clean.PatientIdentityRemoved = "YES"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = clean.SOPClassUID
    meta.MediaStorageSOPInstanceUID = clean.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    clean.file_meta = meta
    out = io.BytesIO()
    clean.save_as(out, enforce_file_format=True)
    return out.getvalue()
