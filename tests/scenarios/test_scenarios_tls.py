"""The DICOM TLS scenarios of the catalogue against a real local lab (the PACS's TLS listener on a
free port, its lab CA in its TLS folder): each passes, seen from the modality and from the PACS's
events, and the modality's words are the ones the README's TLS table lists."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ct_simulator.scenarios import catalogue

TLS_SCENARIOS = ["tls-happy-path", "tls-to-plain-port", "plain-to-tls-port", "tls-required-node-sends-plain",
                 "outdated-tls-version", "untrusted-ca", "host-name-mismatch", "expired-client-certificate",
                 "missing-client-certificate", "wrong-client-identity"]


def test_the_catalogue_has_the_tls_scenarios():
    names = {s.name for s in catalogue.load()}
    assert set(TLS_SCENARIOS) <= names
    assert sum(1 for s in catalogue.load() if s.needs_tls) >= 9


def test_tls_scenarios_pass_against_a_local_lab(lab):
    junit = lab.workdir / "tls.xml"
    r = lab.run_scenarios("run", *TLS_SCENARIOS, "--junit", str(junit))
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode == 0, out
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == set(TLS_SCENARIOS)
    for name, case in cases.items():
        assert case.find("failure") is None and case.find("error") is None and case.find("skipped") is None, \
            f"{name}: {ET.tostring(case, encoding='unicode')}"
    # the modality's own words (the JUnit file keeps them unwrapped)
    said = {name: case.find("system-out").text for name, case in cases.items()}
    assert "is not signed by a CA this CT trusts" in said["untrusted-ca"]
    assert "closed the connection during this CT's TLS handshake without a word" in said["tls-to-plain-port"]
    assert "it is most likely a DICOM TLS port" in said["plain-to-tls-port"]
    assert "share no TLS version" in said["outdated-tls-version"]
    assert "does not name the host this CT called" in said["host-name-mismatch"]
    assert "refused this CT's certificate: it has expired" in said["expired-client-certificate"]
    assert "over TLSv1." in said["tls-happy-path"]
    # the CT's certificate came from the admin API ("Issue a certificate for this node"), the lab CA's
    # folder signed only the expired one
    assert "certificate issued by the admin API" in said["tls-happy-path"]
    assert "certificate issued by the admin API" in said["wrong-client-identity"]
    assert "certificate signed with the lab CA's folder" in said["expired-client-certificate"]
