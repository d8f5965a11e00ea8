"""The Query/Retrieve scenarios (scenarios/qrprobe.py) against a real local lab: each passes,
observed from both sides (the whole catalogue runs in test_scenarios.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import requests
from scenario_lab import TOKEN

QR_SCENARIOS = ["move-destination-unknown", "move-destination-wrong-port", "move-destination-rejects",
                "find-not-allowed", "get-without-role"]


def test_the_qr_scenarios_pass(lab):
    junit = lab.workdir / "qr.xml"
    r = lab.run_scenarios("run", *QR_SCENARIOS, "--junit", str(junit))
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode == 0, out
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == set(QR_SCENARIOS)
    for name, case in cases.items():
        assert case.find("failure") is None and case.find("error") is None and case.find("skipped") is None, \
            f"{name}: {ET.tostring(case, encoding='unicode')}"
    h = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(lab.admin.url + "/api/nodes", headers=h, timeout=5).json() == []  # LABDEST removed too
