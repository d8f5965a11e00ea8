"""Transfer syntaxes the simulator proposes, and re-encoding pixel data for them.

Names on the command line: ``explicit``, ``implicit``, ``deflated``, ``rle``,
``j2k`` (JPEG 2000 lossless), or any transfer syntax UID. The simulator can
propose a syntax that it cannot encode (e.g. JPEG-LS): negotiation is then
exercised for real, and sending says that the simulator cannot encode it.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import encode

from dicomlab.dicom import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    JPEG_2000_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    RLE_LOSSLESS,
    uid_name,
)

ALIASES = {
    "explicit": EXPLICIT_VR_LE,
    "implicit": IMPLICIT_VR_LE,
    "deflated": DEFLATED_EXPLICIT_VR_LE,
    "big-endian": EXPLICIT_VR_BE,
    "rle": RLE_LOSSLESS,
    "j2k": JPEG_2000_LOSSLESS,
    "jpeg2000-lossless": JPEG_2000_LOSSLESS,
    "jpeg-lossless": JPEG_LOSSLESS_SV1,
    "jpeg-ls": JPEG_LS_LOSSLESS,
}
UNCOMPRESSED = (EXPLICIT_VR_LE, IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE)
COMPRESSED = (RLE_LOSSLESS, JPEG_2000_LOSSLESS)
# What a CT proposes when nothing is chosen: like storescu, both uncompressed little endian syntaxes
DEFAULT_PROPOSAL = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)


class UnsupportedSyntax(ValueError):
    """The simulator cannot encode objects in this transfer syntax."""


def resolve(name: str) -> str:
    """A transfer syntax UID from a name or a UID; ValueError names the choices."""
    key = name.strip().lower()
    if key in ALIASES:
        return ALIASES[key]
    uid = UID(name.strip())
    if uid.is_valid and uid.is_transfer_syntax:
        return str(uid)
    choices = ", ".join(ALIASES)
    raise ValueError(f"unknown transfer syntax {name!r}: use one of {choices} or a transfer syntax UID")


def can_encode(uid: str) -> bool:
    return uid in UNCOMPRESSED or uid in COMPRESSED


def encode_for(ds: Dataset, uid: str) -> Dataset:
    """``ds`` ready to be sent or saved in transfer syntax ``uid``.

    Uncompressed syntaxes only change the file meta (pydicom and pynetdicom
    encode on write); RLE Lossless and JPEG 2000 Lossless compress the pixel
    data with the pylibjpeg plugins, losslessly.
    """
    if uid in UNCOMPRESSED:
        ds.file_meta.TransferSyntaxUID = UID(uid)
        return ds
    if uid in COMPRESSED:
        plugin = "pylibjpeg"
        ds.compress(uid, encoding_plugin=plugin, generate_instance_uid=False)
        return ds
    raise UnsupportedSyntax(
        f"the simulator cannot encode {uid_name(uid)}; it can send "
        + ", ".join(uid_name(u) for u in UNCOMPRESSED + COMPRESSED)
    )


def encode_bytes(ds: Dataset, uid: str) -> bytes:
    """``ds`` encoded in transfer syntax ``uid``, as it goes in the P-DATA (no preamble, no file meta).

    The same encoding pynetdicom's ``send_c_store`` applies; compressed
    syntaxes are compressed first (``encode_for``).
    """
    ds = encode_for(ds, uid)
    ts = UID(uid)
    data = encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    if data is None:
        raise ValueError(f"pydicom could not encode the dataset in {uid_name(uid)}")
    return data
