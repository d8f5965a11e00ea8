"""Orthanc 1.10 with DicomTlsEnabled as a real DICOM TLS peer of the lab.

What Orthanc 1.10.1 (Debian bookworm) supports, checked here: ``DicomTlsEnabled``,
``DicomTlsCertificate`` / ``DicomTlsPrivateKey`` (separate PEM files),
``DicomTlsTrustedCertificates`` (one PEM file of trusted certificates),
``DicomTlsRemoteCertificateRequired`` (1.9.3+) and per-modality ``UseDicomTls``
(its SCU side). It has no setting for the TLS versions or cipher suites of DICOM
TLS (DCMTK's defaults: the BCP 195 non-downgrading profile) and does not check a
peer's host name or identity: a certificate chaining to a trusted CA is enough.
"""

from __future__ import annotations

from ct_simulator import outcome
from ct_simulator.cli import main

from .conftest import write_pem


def _send(port: int, *extra: str) -> list[str]:
    return ["send", "--host", "127.0.0.1", "--port", str(port), "--called-aet", "ORTHANC", "--rows", "64",
            "--cols", "64", "--slices", "3", "--progress", "never", "--timeout", "15", "--tls", *extra]


def test_simulator_sends_to_orthanc_over_tls(orthanc, lab_ca, tmp_path, capsys):
    o = orthanc(require_client_cert=True)
    ct = write_pem(lab_ca, tmp_path / "ct", "LABCT01")
    rc = main(_send(o.port, "--calling-aet", "LABCT01", "--tls-bundle", str(ct.bundle)))
    out = capsys.readouterr().out
    assert rc == 0, out + o.output()[-2000:]
    assert " over TLSv1.3 " in out or " over TLSv1.2 " in out
    assert o.instances() == 3


def test_orthanc_requires_a_client_certificate(orthanc, lab_ca, capsys):
    o = orthanc(require_client_cert=True)
    rc = main(_send(o.port, "--tls-ca", str(lab_ca.cert_path)))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_TLS, out
    assert "wants a client certificate and this CT presented none" in out
    assert o.instances() == 0


def test_orthanc_without_client_certificate_required(orthanc, lab_ca, capsys):
    o = orthanc(require_client_cert=False)
    rc = main(_send(o.port, "--tls-ca", str(lab_ca.cert_path)))
    assert rc == 0, capsys.readouterr().out
    assert o.instances() == 3


def test_orthanc_refuses_a_certificate_of_another_ca(orthanc, lab_ca, tmp_path, capsys):
    from dicomlab.tlsca import LabCA

    o = orthanc(require_client_cert=True)
    other = write_pem(LabCA.ensure(tmp_path / "other-ca"), tmp_path / "ct", "LABCT01")
    rc = main(_send(o.port, "--tls-ca", str(lab_ca.cert_path), "--tls-cert", str(other.cert),
                    "--tls-key", str(other.key)))
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_TLS, out
    assert "refused this CT's certificate" in out
    assert o.instances() == 0


def test_simulator_plain_to_orthanc_tls_port(orthanc, capsys):
    o = orthanc(require_client_cert=True)
    args = [a for a in _send(o.port) if a != "--tls"]
    rc = main(args)
    out = capsys.readouterr().out
    assert rc == outcome.EXIT_TLS, out
    assert "DICOM TLS port" in out
