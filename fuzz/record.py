"""Record what a real DCMTK storescu sends in one association: ``python -m fuzz.record``.

Starts a PACS (as the fuzzer does), puts a recording TCP relay in front of it, sends
one small CT instance with storescu through the relay, and writes the PDUs storescu
sent (A-ASSOCIATE-RQ, P-DATA-TF with the command and the dataset, A-RELEASE-RQ) to
fuzz/seeds/storescu-ct.json. The ``recorded`` fuzz cases mutate these bytes.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from . import cases as c
from . import wire as w
from .target import Target


def relay(listener: socket.socket, port: int, recorded: bytearray) -> None:
    client, _ = listener.accept()
    server = socket.create_connection(("127.0.0.1", port))

    def pump(src: socket.socket, dst: socket.socket, keep: bytearray | None) -> None:
        while data := src.recv(65536):
            if keep is not None:
                keep += data
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=pump, args=(server, client, None), daemon=True)
    back.start()
    pump(client, server, recorded)
    back.join(10)
    client.close()
    server.close()


def main() -> int:
    from pydicom import dcmread
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    work = Path(tempfile.mkdtemp(prefix="fuzz-record-"))
    target = Target("socket", work).start()
    try:
        raw = c.dataset(0)
        path = work / "ct.dcm"
        # the dataset of case 0, with the recorded UID, as a Part 10 file for storescu
        from io import BytesIO

        from pydicom.filereader import read_dataset

        ds = read_dataset(BytesIO(raw), is_implicit_VR=False, is_little_endian=True)
        ds.SOPInstanceUID = c.RECORDED_UID.decode()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
        dcmread(path)
        listener = socket.create_server(("127.0.0.1", 0))
        recorded = bytearray()
        t = threading.Thread(target=relay, args=(listener, target.port, recorded), daemon=True)
        t.start()
        exe = shutil.which("storescu")
        if exe is None:
            raise SystemExit("storescu not found: install Debian's dcmtk")
        run = subprocess.run([exe, "-aet", c.CALLING, "-aec", c.CALLED, "-xs", "127.0.0.1",
                              str(listener.getsockname()[1]), str(path)], capture_output=True, text=True, timeout=30)
        t.join(10)
        if run.returncode != 0:
            raise SystemExit(f"storescu failed: {run.stdout}{run.stderr}")
        pdus, rest = w.parse_pdus(bytes(recorded))
        assert not rest and pdus, "storescu's bytes are not whole PDUs"
        encoded = [w.pdu(kind, body).hex() for kind, body in pdus]
        out = c.SEEDS / "storescu-ct.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({"about": "the PDUs DCMTK storescu sent for one CT instance (python -m fuzz.record)",
                                   "tool": subprocess.run([exe, "--version"], capture_output=True,
                                                          text=True).stdout.splitlines()[0],
                                   "pdus": encoded}, indent=1) + "\n")
        print(f"recorded {len(encoded)} PDUs ({', '.join(w.PDU_NAMES.get(k, hex(k)) for k, _ in pdus)}) to {out}")
        return 0
    finally:
        target.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
