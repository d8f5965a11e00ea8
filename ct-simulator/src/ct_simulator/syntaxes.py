"""Transfer syntaxes the simulator proposes, and re-encoding pixel data for them.

Names on the command line: ``explicit``, ``implicit``, ``deflated``, ``rle``,
``j2k`` (JPEG 2000 lossless), or any transfer syntax UID. The simulator can
propose a syntax that it cannot encode (e.g. JPEG-LS): negotiation is then
exercised for real, and sending says that the simulator cannot encode it.
"""

from __future__ import annotations

import threading
import zlib

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pynetdicom.dsutils import encode

from dicomlab.conformance import SIM_COMPRESSED, SIM_DEFAULT_PROPOSAL, SIM_SYNTAX_ALIASES, SIM_UNCOMPRESSED
from dicomlab.dicom import uid_name

# One list of what the simulator proposes and encodes, shared with its conformance statement
# (dicomlab.conformance: the admin API shows it without the simulator installed).
ALIASES = SIM_SYNTAX_ALIASES
UNCOMPRESSED = SIM_UNCOMPRESSED
COMPRESSED = SIM_COMPRESSED
# What a CT proposes when nothing is chosen: like storescu, both uncompressed little endian syntaxes
DEFAULT_PROPOSAL = SIM_DEFAULT_PROPOSAL


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

    The bytes pynetdicom's ``send_c_store`` would send (pydicom's
    ``write_dataset``, deflated for the deflated syntax); compressed syntaxes
    are compressed first (``encode_for``). Uncompressed datasets go through
    ``_ElementCache``: the elements a series shares are encoded once.
    """
    ds = encode_for(ds, uid)
    ts = UID(uid)
    data = None
    if ts.is_little_endian and uid in UNCOMPRESSED:
        data = _CACHE.encode(ds, ts.is_implicit_VR)
        if data is not None and ts.is_deflated:
            packer = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
            data = packer.compress(data) + packer.flush()
            data += b"\x00" if len(data) % 2 else b""
    if data is None:
        data = encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    if data is None:
        raise ValueError(f"pydicom could not encode the dataset in {uid_name(uid)}")
    return data


class _ElementCache:
    """pydicom's ``write_dataset``, element by element, with the encoded bytes of reused elements kept.

    ``iod.iter_instances`` builds each slice from its series' template, and
    the template's DataElement objects are shared by every slice: ~85 of
    the ~90 elements of a slice are encoded once per series instead of once
    per slice (pydicom spends ~0.8 ms per slice on them). An entry is used
    only for the same element object holding the same value object, with
    the same VR, encoding and character set; datasets with elements whose VR
    depends on the encoding, or not yet parsed, take pydicom's own path.
    Elements are immutable by contract here (a template is never changed
    in place once sliced). Only small elements are kept, at most ``SIZE``.
    """

    SIZE = 4096
    SMALL = 8192  # bytes

    def __init__(self) -> None:
        self.entries: dict[tuple[int, bool], tuple[DataElement, object, str, object, bytes]] = {}
        self.lock = threading.Lock()

    def encode(self, ds: Dataset, implicit: bool) -> bytes | None:
        charset = ds.get("SpecificCharacterSet")
        charset_key = tuple(charset) if isinstance(charset, list | MultiValue) else charset
        parts: list[bytes] = []
        entries = self.entries
        for tag in sorted(ds.keys()):
            if tag.element == 0 and tag.group > 6:
                continue  # retired group lengths are not written (PS3.5 7.2), as in write_dataset
            elem = ds.get_item(tag)
            if not isinstance(elem, DataElement) or " or " in elem.VR:
                return None
            key = (id(elem), implicit)
            hit = entries.get(key)
            if hit is not None and hit[0] is elem and hit[1] is elem.value and hit[2] == elem.VR \
                    and hit[3] == charset_key:
                parts.append(hit[4])
                continue
            fp = DicomBytesIO()
            fp.is_implicit_VR, fp.is_little_endian = implicit, True
            write_data_element(fp, elem, charset)
            raw = fp.getvalue()
            parts.append(raw)
            if len(raw) <= self.SMALL:
                with self.lock:
                    if len(entries) >= self.SIZE:
                        entries.clear()
                    entries[key] = (elem, elem.value, elem.VR, charset_key, raw)
        return b"".join(parts)


_CACHE = _ElementCache()
