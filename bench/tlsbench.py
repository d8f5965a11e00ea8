"""The cost of DICOM TLS (workload ``tls``): the same receiver, plain and over TLS, side by side
with DCMTK ``storescp +tls``.

Two figures per receiver, each measured plain and over TLS on a fresh receiver:

- **TLS association accept rate**: bench/echo_client.py with ``--tls-ca``: every association is a
  new TCP connection and a full TLS 1.2+ handshake with a client certificate (no session
  resumption), then A-ASSOCIATE-RQ, C-ECHO, A-RELEASE; completed associations/s.
- **TLS single-association ingest**: DCMTK ``storescu +tls`` sends the series in one association;
  images/s = images / storescu's wall time. The handshake is paid once: this is the cost of
  encrypting the data.

The row of each receiver is its TLS figure; its ratio is TLS / plain of the same receiver (the
handshake's cost in its own terms), and the detail gives the plain figure and, for the PACS, its
TLS figure against ``storescp +tls``'s. Certificates come from a lab CA made for the run
(``dicomlab.tlsca``); the receivers ask for a client certificate (storescp's default ``-rc``; the
PACS's nodes have ``tls = allowed``, and the client presents one anyway).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicomlab.tlsca import LabCA

from .procs import dcmtk_env, free_port, poll, port_open
from .receivers import NodeSpec, PacsReceiver, Receiver, Storescp, tool

if TYPE_CHECKING:
    from .results import Measure
    from .run import Bench

TLS_ACCEPT = "TLS association accept rate"
TLS_SINGLE = "TLS single-association ingest"
ORDER = (TLS_ACCEPT, TLS_SINGLE)
LABELS = {"storescp": "DCMTK storescp +tls", "pacs": "PACS (ours), TLS port"}


class Pki:
    """The run's lab CA, a server certificate for 127.0.0.1 and a client certificate."""

    def __init__(self, folder: Path) -> None:
        self.ca = LabCA.ensure(folder)
        self.folder = folder
        server = self.ca.issue("BENCH-SCP", ["localhost", "127.0.0.1"], server=True)
        client = self.ca.issue("CT01", client=True)
        self.server_cert, self.server_key = self._write("server", server.cert_pem, server.key_pem)
        self.client_cert, self.client_key = self._write("client", client.cert_pem, client.key_pem)

    def _write(self, name: str, cert: bytes, key: bytes) -> tuple[str, str]:
        c, k = self.folder / f"{name}.crt", self.folder / f"{name}.key"
        c.write_bytes(cert)
        k.write_bytes(key)
        k.chmod(0o600)
        return str(c), str(k)

    @property
    def storescu_args(self) -> list[str]:
        return ["+tls", self.client_key, self.client_cert, "+cf", str(self.ca.cert_path)]

    @property
    def echo_args(self) -> list[str]:
        return ["--tls-ca", str(self.ca.cert_path), "--tls-cert", self.client_cert, "--tls-key", self.client_key]


class TlsStorescp(Storescp):
    """storescp +tls with the run's server certificate, requiring a client certificate (-rc)."""

    def __init__(self, kids: Any, work: Path, pki: Pki) -> None:
        super().__init__(kids, work)
        self.pki = pki
        self.label = LABELS["storescp"]
        self.storescu_args, self.echo_args = pki.storescu_args, pki.echo_args

    def start(self) -> "TlsStorescp":
        self.out.mkdir(parents=True)
        self.port = free_port()
        argv = [tool("storescp"), "+tls", self.pki.server_key, self.pki.server_cert, "+cf", str(self.pki.ca.cert_path),
                "-aet", self.ae_title, "-od", str(self.out), str(self.port)]
        self.proc = self.kids.start(argv, log=self.work / "log.txt", env=dcmtk_env())
        poll(lambda: port_open(self.port), 15, "storescp +tls to listen", alive=self._alive)
        return self


class TlsPacs(PacsReceiver):
    """The PACS with its TLS listener on a free port, the run's lab CA in its TLS folder (it issues its
    own server certificate from it at start); sending goes to the TLS port."""

    def __init__(self, kids: Any, work: Path, nodes: list[NodeSpec], pki: Pki, extra_env: dict[str, str]) -> None:
        self.tls_port = free_port()
        super().__init__(kids, work, nodes, extra_env=extra_env)
        self.label = LABELS["pacs"]
        self.tls_dir = self.work / "tls"
        self.tls_dir.mkdir()
        for name in ("ca.pem", "ca.key"):  # the same CA as storescp's: the clients trust one CA
            (self.tls_dir / name).write_bytes((pki.folder / name).read_bytes())
            (self.tls_dir / name).chmod(0o600 if name.endswith(".key") else 0o644)
        self.extra_env = {**self.extra_env, "PACS_TLS_DIR": str(self.tls_dir), "PACS_TLS_PORT": str(self.tls_port)}
        self.storescu_args, self.echo_args = pki.storescu_args, pki.echo_args

    def listener_extra(self) -> dict[str, object]:
        return {"tls_enabled": True, "tls_port": self.tls_port}

    def start(self) -> "TlsPacs":
        super().start()
        poll(lambda: port_open(self.tls_port), 30, "the PACS's DICOM TLS port to listen", alive=self._alive)
        self.port = self.tls_port
        return self


class TlsBench:
    def __init__(self, bench: "Bench") -> None:
        self.b = bench

    def run(self) -> None:
        b = self.b
        if "tls" not in b.ns.workloads:
            return
        keys = [k for k in ("storescp", "pacs") if k in b.ns.receivers]
        if not keys:
            return
        if not b.series:
            b.generate()
        pki = Pki(b.work / "tls-pki")
        for workload, fn, unit in ((TLS_ACCEPT, b.accept, "assoc/s"), (TLS_SINGLE, b.single, "images/s")):
            figures: dict[str, dict[str, list[float]]] = {}
            last: dict[str, dict[str, Measure]] = {}
            repeat = 1 if workload == TLS_ACCEPT else b.ns.repeat
            for i in range(repeat):
                for key in keys:
                    for mode in ("plain", "tls"):
                        recv = self._receiver(key, mode, pki)
                        m = self._measure(workload, recv, fn, f"{workload}-{key}-{mode}-{i + 1}",
                                          f"{recv.label}{' plain' if mode == 'plain' else ''}"
                                          + (f" (run {i + 1}/{repeat})" if repeat > 1 else ""))
                        last.setdefault(key, {})[mode] = m
                        if m.value is not None:
                            figures.setdefault(key, {}).setdefault(mode, []).append(m.value)
            self._rows(workload, unit, keys, figures, last)

    def _receiver(self, key: str, mode: str, pki: Pki) -> Receiver:
        from .results import ECHO_AE, SENDER_AE

        b = self.b
        if key == "storescp":
            return Storescp(b.kids, b.work) if mode == "plain" else TlsStorescp(b.kids, b.work, pki)
        nodes = [NodeSpec(SENDER_AE, tls="allowed"), NodeSpec(ECHO_AE, tls="allowed")]
        if mode == "plain":
            return PacsReceiver(b.kids, b.work, nodes, extra_env=b.pacs_env)
        return TlsPacs(b.kids, b.work, nodes, pki, b.pacs_env)

    def _measure(self, workload: str, recv: Receiver, fn: Any, name: str, label: str) -> "Measure":
        self.b.say(f"{workload}: {label}")
        return self.b.measure_once(recv, fn, name)

    def _rows(self, workload: str, unit: str, keys: list[str], figures: dict[str, dict[str, list[float]]],
              last: dict[str, dict[str, "Measure"]]) -> None:
        from .results import Row, _median

        b = self.b
        med = {k: {mode: _median(v) for mode, v in figures.get(k, {}).items()} for k in keys}
        for key in keys:
            tls, plain = med[key].get("tls"), med[key].get("plain")
            detail = [f"plain {plain:,.0f} {unit}" if plain else "plain: not measured"]
            extra: dict[str, object] = {"plain": plain, "tls": tls}
            dcmtk = med.get("storescp", {}).get("tls")
            if key == "pacs" and tls and dcmtk:
                extra["vs_storescp_tls"] = tls / dcmtk
                detail.append(f"{tls / dcmtk:.2f}× storescp +tls")
            m_tls = last.get(key, {}).get("tls")
            if m_tls is not None and m_tls.detail:
                detail.append(f"TLS: {m_tls.detail}")
            notes = "; ".join(dict.fromkeys(m.note for m in last.get(key, {}).values() if m.note))
            b.rows.append(Row(workload, LABELS[key], tls, unit, "; ".join(detail),
                              ratio=(tls / plain) if tls and plain else None, ratio_to="plain", note=notes,
                              runs=figures.get(key, {}).get("tls", []), extra=extra))
