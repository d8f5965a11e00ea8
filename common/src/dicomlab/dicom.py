"""DICOM constants that more than one service needs, each with its meaning."""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

SOP_CLASS_NAMES = {
    VERIFICATION: "Verification",
    CT_IMAGE_STORAGE: "CT Image Storage",
    ENHANCED_CT_IMAGE_STORAGE: "Enhanced CT Image Storage",
    SECONDARY_CAPTURE_IMAGE_STORAGE: "Secondary Capture Image Storage",
    MR_IMAGE_STORAGE: "MR Image Storage",
}
TRANSFER_SYNTAX_NAMES = {
    IMPLICIT_VR_LE: "Implicit VR Little Endian",
    EXPLICIT_VR_LE: "Explicit VR Little Endian",
    EXPLICIT_VR_BE: "Explicit VR Big Endian",
    DEFLATED_EXPLICIT_VR_LE: "Deflated Explicit VR Little Endian",
    JPEG_LOSSLESS_SV1: "JPEG Lossless SV1",
    JPEG_LS_LOSSLESS: "JPEG-LS Lossless",
    JPEG_2000_LOSSLESS: "JPEG 2000 Lossless",
    JPEG_2000: "JPEG 2000",
    RLE_LOSSLESS: "RLE Lossless",
}

DEFAULT_STORAGE_SOP_CLASSES = [
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
]
# Uncompressed plus the common lossless compressed syntaxes, stored as received.
DEFAULT_TRANSFER_SYNTAXES = [
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    JPEG_2000_LOSSLESS,
    RLE_LOSSLESS,
]


@lru_cache(maxsize=1024)  # bounded: UIDs come from the network; ~130 per storescu association
def uid_name(uid: str) -> str:
    """'CT Image Storage (1.2.840.10008.5.1.4.1.1.2)' for a known UID, else the UID."""
    name = SOP_CLASS_NAMES.get(uid) or TRANSFER_SYNTAX_NAMES.get(uid)
    if name is None:
        try:
            from pydicom.uid import UID

            name = UID(uid).name if UID(uid).is_valid and UID(uid).name != uid else None
        except Exception:  # pydicom not installed in this service: the UID alone
            name = None
    return f"{name} ({uid})" if name else uid


class Rejection(NamedTuple):
    """A-ASSOCIATE-RJ fields, PS3.8 §9.3.4."""

    result: int
    source: int
    reason: int

    @property
    def words(self) -> str:
        return (
            f"{RJ_RESULT[self.result]} / {RJ_SOURCE[self.source]} / "
            f"{RJ_REASON[(self.source, self.reason)]}"
        )

    @property
    def codes(self) -> str:
        return f"{self.result}/{self.source}/{self.reason}"


RJ_RESULT = {1: "rejected-permanent", 2: "rejected-transient"}
RJ_SOURCE = {
    1: "service-user",
    2: "service-provider (ACSE)",
    3: "service-provider (presentation)",
}
RJ_REASON = {
    (1, 1): "no-reason-given",
    (1, 2): "application-context-name-not-supported",
    (1, 3): "calling-AE-title-not-recognized",
    (1, 7): "called-AE-title-not-recognized",
    (2, 1): "no-reason-given",
    (2, 2): "protocol-version-not-supported",
    (3, 1): "temporary-congestion",
    (3, 2): "local-limit-exceeded",
}

RJ_REGISTRY_UNAVAILABLE = Rejection(2, 3, 1)
RJ_CALLED_AET = Rejection(1, 1, 7)
RJ_CALLING_AET = Rejection(1, 1, 3)
RJ_TOO_MANY = Rejection(2, 3, 2)

# DIMSE status codes used by the lab
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources
STATUS_DATASET_MISMATCH = 0xA900  # Error: Data Set does not match SOP Class
STATUS_CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand
STATUS_PROCESSING_FAILURE = 0x0110  # Processing failure
STATUS_NOT_AUTHORIZED = 0x0124  # Refused: Not authorized
