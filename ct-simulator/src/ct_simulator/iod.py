"""CT Image Storage objects: what a study looks like, and the IOD builder.

A ``StudyPlan`` says what to produce (how many studies, series, slices, the
matrix, the patient, the seed, the misbehaviour that changes the objects).
``iter_instances`` streams ``Instance`` records, one at a time, each holding a
complete CT Image IOD dataset (PS3.3 A.3): the series-level attributes are
built once per series into a template, and each slice only sets what changes
(SOP Instance UID, instance number, position along z, pixel data).

Everything, UIDs included, is derived from the seed, so the same seed gives
the same objects byte for byte.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from dicomlab.dicom import CT_IMAGE_STORAGE, EXPLICIT_VR_LE

from . import __version__
from .phantom import STORED_OFFSET, Phantom

IMPLEMENTATION_VERSION = f"DICOMLAB_CT_{__version__}"[:16]
MANUFACTURER = "DICOM Lab"
MODEL = "Synthetic CT 64"
FOV_MM = 380.0
SCAN_LENGTH_MM = 500.0  # a thorax/abdomen/pelvis scan, apex to pelvis

_FIRST = ["ALEX", "SAM", "ROBIN", "KIM", "JO", "LEE", "MARIE", "JEAN", "ANA", "LUCA"]
_LAST = ["MARTIN", "BERNARD", "MULLER", "ROSSI", "GARCIA", "SMITH", "NGUYEN", "KOWALSKI", "DUBOIS", "SILVA"]


def derived_uid(*parts: object) -> str:
    """A deterministic 2.25 UID (PS3.5 B.2) from the given parts."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


@dataclass
class StudyPlan:
    """What to generate. Defaults make one realistic 100-slice study."""

    studies: int = 1
    series: int = 1
    slices: int = 100
    rows: int = 512
    cols: int = 512
    seed: int = 0
    patient_name: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    study_description: str = "CT THORAX ABDOMEN"
    station_name: str = "CT01"
    institution: str = "DICOM Lab Hospital"
    slice_spacing_mm: float | None = None  # default: the scan covers SCAN_LENGTH_MM
    sop_class_uid: str = CT_IMAGE_STORAGE  # another one on purpose (a scenario)
    duplicate_uids: bool = False  # every instance of a series reuses one SOP Instance UID

    @property
    def total(self) -> int:
        return self.studies * self.series * self.slices

    @property
    def spacing(self) -> float:
        if self.slice_spacing_mm:
            return float(self.slice_spacing_mm)
        return round(min(5.0, max(0.625, SCAN_LENGTH_MM / max(self.slices, 1))), 3)


@dataclass
class Instance:
    """One generated object and where it sits in the plan (1-based numbers)."""

    dataset: Dataset
    study: int
    series: int
    number: int
    index: int  # 0-based position in the whole plan

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


@dataclass
class _Patient:
    name: str
    id: str
    birth: dt.date
    sex: str
    size_m: float
    weight_kg: float
    when: dt.datetime
    accession: str
    extra: dict[str, str] = field(default_factory=dict)


def _patient(plan: StudyPlan, study: int) -> _Patient:
    rnd = random.Random(f"{plan.seed}:{study}")
    sex = rnd.choice("MF")
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=rnd.randrange(0, 60 * 365))
    when = dt.datetime(2024, 1, 2, 8, 0) + dt.timedelta(days=rnd.randrange(0, 365), minutes=rnd.randrange(0, 600))
    name = plan.patient_name or f"{rnd.choice(_LAST)}^{rnd.choice(_FIRST)}"
    pid = plan.patient_id or f"LAB{rnd.randrange(10**6, 10**7)}"
    acc = plan.accession_number or f"A{rnd.randrange(10**7, 10**8)}"
    if plan.studies > 1 and plan.accession_number:
        acc = f"{acc[:14]}{study}"
    return _Patient(name, pid, birth, sex, round(rnd.uniform(1.55, 1.92), 2),
                    round(rnd.uniform(52, 110), 1), when, acc)


def _age(birth: dt.date, on: dt.date) -> str:
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return f"{years:03d}Y"


def _series_template(plan: StudyPlan, study: int, series: int, pat: _Patient, phantom: Phantom) -> Dataset:
    """Every attribute that is the same for all slices of one series, module by module."""
    when = pat.when + dt.timedelta(minutes=3 * (series - 1))
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    kernels = ["STANDARD", "LUNG", "BONE", "SOFT"]
    kernel = kernels[(series - 1) % len(kernels)]
    ds = Dataset()
    _sop_common(ds, plan, date, time)
    _study_series_equipment(ds, plan, pat, date, time, kernel)
    _patient_module(ds, pat)
    _ct_acquisition(ds, plan, kernel)
    _frame_of_reference(ds, plan, study, series, pat)
    _image_pixel_voi(ds, plan, phantom, kernel)
    ds.IrradiationEventUID = derived_uid("irradiation", plan.seed, study, series, pat.id)
    return ds


def _sop_common(ds: Dataset, plan: StudyPlan, date: str, time: str) -> None:
    """SOP Common (and the image type)."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    ds.SOPClassUID = plan.sop_class_uid


def _study_series_equipment(ds: Dataset, plan: StudyPlan, pat: _Patient, date: str, time: str, kernel: str) -> None:
    """General Study, Patient Study, General Series, Equipment."""
    ds.StudyDate = pat.when.strftime("%Y%m%d")
    ds.SeriesDate = date
    ds.AcquisitionDate = date
    ds.ContentDate = date
    ds.StudyTime = pat.when.strftime("%H%M%S")
    ds.SeriesTime = time
    ds.AcquisitionTime = time
    ds.ContentTime = time
    ds.AccessionNumber = pat.accession
    ds.Modality = "CT"
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = plan.institution
    ds.ReferringPhysicianName = "REFERRER^LAB"
    ds.StationName = plan.station_name[:16]
    ds.StudyDescription = plan.study_description[:64]
    ds.SeriesDescription = f"{plan.study_description[:40]} {phantom_slice_label(plan)} {kernel}"[:64]
    ds.ManufacturerModelName = MODEL


def _patient_module(ds: Dataset, pat: _Patient) -> None:
    """Patient, and the body part."""
    ds.PatientName = pat.name
    ds.PatientID = pat.id
    ds.PatientBirthDate = pat.birth.strftime("%Y%m%d")
    ds.PatientSex = pat.sex
    ds.PatientAge = _age(pat.birth, pat.when.date())
    ds.PatientSize = f"{pat.size_m:.2f}"
    ds.PatientWeight = f"{pat.weight_kg:.1f}"
    ds.BodyPartExamined = "CHEST"


def _ct_acquisition(ds: Dataset, plan: StudyPlan, kernel: str) -> None:
    """CT Image's acquisition attributes, CT Exposure, the CTDI phantom."""
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = f"{plan.spacing:g}"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.DeviceSerialNumber = f"{(plan.seed % 90000) + 10000}"
    ds.SoftwareVersions = IMPLEMENTATION_VERSION
    ds.ProtocolName = "THORAX_ABDOMEN_HELICAL"
    ds.ReconstructionDiameter = f"{FOV_MM:g}"
    ds.DistanceSourceToDetector = "1040"
    ds.DistanceSourceToPatient = "570"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "160"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "220"
    ds.Exposure = "110"
    ds.FilterType = "BODY"
    ds.GeneratorPower = "26"
    ds.FocalSpots = "1.2"
    ds.ConvolutionKernel = kernel
    ds.PatientPosition = "HFS"
    ds.RevolutionTime = 0.5
    ds.SingleCollimationWidth = 0.625
    ds.TotalCollimationWidth = 40.0
    ds.TableSpeed = 78.75
    ds.TableFeedPerRotation = 39.375
    ds.SpiralPitchFactor = 0.984
    ds.CTDIvol = 9.8
    phantom_code = Dataset()
    phantom_code.CodeValue = "113691"
    phantom_code.CodingSchemeDesignator = "DCM"
    phantom_code.CodeMeaning = "IEC Body Dosimetry Phantom"
    ds.CTDIPhantomTypeCodeSequence = [phantom_code]


def _frame_of_reference(ds: Dataset, plan: StudyPlan, study: int, series: int, pat: _Patient) -> None:
    """Relationship (study and series UIDs, numbers), Image Plane orientation, Frame of Reference."""
    ds.StudyInstanceUID = derived_uid("study", plan.seed, study, pat.id)
    ds.SeriesInstanceUID = derived_uid("series", plan.seed, study, series, pat.id)
    ds.StudyID = f"{(plan.seed + study) % 100000}"
    ds.SeriesNumber = str(series)
    ds.AcquisitionNumber = "1"
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = derived_uid("for", plan.seed, study, pat.id)
    ds.PositionReferenceIndicator = ""


def _image_pixel_voi(ds: Dataset, plan: StudyPlan, phantom: Phantom, kernel: str) -> None:
    """Image Pixel, CT Image's pixel attributes, VOI LUT (windows that suit the kernel), rescale."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = plan.rows
    ds.Columns = plan.cols
    spacing = f"{phantom.spacing_mm:.6g}"
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if kernel == "LUNG":
        ds.WindowCenter, ds.WindowWidth = ["-600", "40"], ["1500", "400"]
        ds.WindowCenterWidthExplanation = ["LUNG", "SOFT TISSUE"]
    elif kernel == "BONE":
        ds.WindowCenter, ds.WindowWidth = ["400", "40"], ["1800", "400"]
        ds.WindowCenterWidthExplanation = ["BONE", "SOFT TISSUE"]
    else:
        ds.WindowCenter, ds.WindowWidth = ["40", "-600"], ["400", "1500"]
        ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG"]
    ds.RescaleIntercept = str(-STORED_OFFSET)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"


def phantom_slice_label(plan: StudyPlan) -> str:
    return f"{plan.spacing:g}mm"


def file_meta(ds: Dataset, transfer_syntax: str = EXPLICIT_VR_LE) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def iter_instances(plan: StudyPlan) -> Iterator[Instance]:
    """Every instance of the plan, study by study, series by series, slice by slice.

    One phantom per series; no more than one slice of pixel data is alive at
    a time (plus the phantom's two anchor images).
    """
    index = 0
    spacing = plan.spacing
    for study in range(1, plan.studies + 1):
        pat = _patient(plan, study)
        for series in range(1, plan.series + 1):
            phantom = Phantom(plan.rows, plan.cols, FOV_MM, seed=plan.seed * 1000 + study)
            template = _series_template(plan, study, series, pat, phantom)
            series_uid = str(template.SeriesInstanceUID)
            z0 = 0.0  # table position of the first slice (patient's head side)
            first_uid = f"{series_uid}.1"
            for number in range(1, plan.slices + 1):
                level = (number - 1) * spacing
                pixels = phantom.stored(level, number - 1)
                ds = Dataset()
                ds.update(template)  # the series elements are shared; per-slice ones are new
                ds.SOPInstanceUID = first_uid if plan.duplicate_uids else f"{series_uid}.{number}"
                ds.InstanceNumber = str(number)
                z = round(z0 - level, 3)
                ds.ImagePositionPatient = [
                    f"{float(phantom.x[0]):.3f}",
                    f"{float(phantom.y[0]):.3f}",
                    f"{z:g}",
                ]
                ds.SliceLocation = f"{z:g}"
                ds.PixelData = pixels.tobytes()
                ds["PixelData"].VR = "OW"
                ds.file_meta = file_meta(ds)
                yield Instance(ds, study, series, number, index)
                index += 1


def write_part10(ds: Dataset, path: Path) -> None:
    """A Part 10 file: preamble, file meta, the dataset in its transfer syntax."""
    ds.save_as(path, enforce_file_format=True)
