"""Small, valid CT Image Storage datasets for the PACS tests (the CT simulator
makes realistic ones; these only need to be real DICOM with distinct UIDs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT = "1.2.840.10008.5.1.4.1.1.2"


def ct_dataset(study_uid: str, series_uid: str, number: int, rows: int = 64, cols: int = 64,
               seed: int = 0, sop_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study_uid + ".1" if len(study_uid) < 62 else generate_uid()
    ds.PatientName = "LAB^TEST"
    ds.PatientID = "LAB0001"
    ds.StudyDate = "20261127"
    ds.StudyTime = "101500"
    ds.StudyDescription = "CT THORAX"
    ds.AccessionNumber = "A0001"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.KVP = 120
    ds.ImagePositionPatient = [0, 0, -number * 1.25]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.25
    rng = np.random.default_rng(seed * 100_003 + number)
    ds.PixelData = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16).tobytes()
    return ds


def encoded(ds: Dataset, implicit: bool = False) -> bytes:
    """The dataset's bytes as a C-STORE carries them: little endian, no file meta."""
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, implicit
    write_dataset(buf, ds)
    return buf.getvalue()


def as_file(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    return ds


def write_series(folder: Path, count: int, rows: int = 64, cols: int = 64, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(1, count + 1):
        ds = as_file(ct_dataset(study, series, i, rows, cols, seed))
        p = folder / f"{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths
