"""A lab with images for the DICOMweb tests: a real PACS, studies sent into it by the
CT simulator (Explicit VR LE, RLE Lossless, JPEG 2000 Lossless) and by DCMTK's
storescu (JPEG Lossless SV1 and JPEG-LS Lossless, compressed with dcmcjpeg and
dcmcjpls), and the admin API under real gunicorn reading the PACS's storage."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from admin_helpers import Gunicorn
from dicomdata import write_series

from lab import PacsProcess, add_node, dcmtk_env, need_tool

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
RLE = "1.2.840.10008.1.2.5"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"


@dataclass
class ImageLab:
    pacs: PacsProcess
    api: Gunicorn
    originals: Path  # the uncompressed files that DCMTK compressed and sent
    studies: dict[str, str] = field(default_factory=dict)  # patient id -> study uid

    @property
    def storage(self) -> Path:
        return self.pacs.storage_dir

    def stop(self) -> None:
        self.api.stop()
        self.pacs.stop()


def simulator_send(pacs: PacsProcess, patient_id: str, slices: int, seed: int, syntax: str | None = None,
                   size: int = 128) -> str:
    """One study from the CT simulator's command line; returns its Study Instance UID."""
    report = Path(tempfile.mkdtemp(prefix="lab-dw-")) / "report.json"
    cmd = [sys.executable, "-m", "ct_simulator", "send", "--slices", str(slices), "--rows", str(size), "--cols", str(size),
           "--seed", str(seed), "--patient-id", patient_id, "--calling-aet", "CT01", "--called-aet", "PACS",
           "--host", "127.0.0.1", "--port", str(pacs.port), "--progress", "never", "--report-json", str(report)]
    if syntax:
        cmd += ["--transfer-syntax", syntax]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = json.loads(report.read_text())["instances"]
    stored = [r for r in rows if r["status"] == 0]
    assert len(stored) == slices, rows
    return stored[0]["study_uid"]


def dcmtk_send(pacs: PacsProcess, folder: Path) -> tuple[str, list[Path]]:
    """Three small CT instances: the first compressed JPEG Lossless SV1, the second JPEG-LS Lossless,
    the third sent uncompressed in Implicit VR Little Endian, each by storescu proposing only its
    syntax. Returns the study UID and the uncompressed originals."""
    from pydicom import dcmread

    originals = write_series(folder / "originals", 3, rows=96, cols=80, seed=5)
    storescu = need_tool("storescu", "dcmtk")
    for src, tool, flag in ((originals[0], "dcmcjpeg", "-xs"), (originals[1], "dcmcjpls", "-xt"),
                            (originals[2], None, "-xi")):
        out = folder / f"{src.stem}-{tool}.dcm"
        if tool is None:
            out = src
        else:
            subprocess.run([need_tool(tool, "dcmtk"), str(src), str(out)], check=True, capture_output=True,
                           timeout=60)
        sent = subprocess.run([storescu, flag, "-aet", "CT01", "-aec", "PACS", "127.0.0.1", str(pacs.port), str(out)],
                              capture_output=True, text=True, timeout=60, env=dcmtk_env())
        assert sent.returncode == 0, sent.stdout + sent.stderr
    return str(dcmread(originals[0]).StudyInstanceUID), originals


def start(redis_url: str, registry, workdir: Path) -> ImageLab:
    need_tool("dcmcjpeg", "dcmtk")
    pacs = PacsProcess(redis_url, workdir / "storage").start()
    try:
        add_node(registry, "CT01", "127.0.0.1")
        studies = {
            "DW-EXPLICIT": simulator_send(pacs, "DW-EXPLICIT", 6, 11),
            "DW-RLE": simulator_send(pacs, "DW-RLE", 2, 12, "rle"),
            "DW-J2K": simulator_send(pacs, "DW-J2K", 2, 13, "j2k"),
        }
        studies["LAB0001"], _ = dcmtk_send(pacs, workdir)
        api = Gunicorn(redis_url, extra_env={"PACS_STORAGE_DIR": str(pacs.storage_dir)})
    except BaseException:
        pacs.stop()
        raise
    return ImageLab(pacs, api, workdir / "originals", studies)


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
