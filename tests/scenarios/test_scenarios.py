"""The whole misconfiguration catalogue against a real local lab: every
scenario passes, observed from both sides, and the JUnit file says so; a
wrong expectation makes the runner fail."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import requests
from scenario_lab import TOKEN

from ct_simulator.scenarios import catalogue


def _cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuite"
    return {c.get("name"): c for c in root.iter("testcase")}


def test_the_whole_catalogue_passes_against_a_local_lab(lab):
    junit = lab.workdir / "scenarios.xml"
    r = lab.run_scenarios("run", "--junit", str(junit))
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode == 0, out
    cases = _cases(junit)
    names = {s.name for s in catalogue.load()}
    assert set(cases) == names
    for name, case in cases.items():
        assert case.find("failure") is None and case.find("error") is None and case.find("skipped") is None, \
            f"{name}: {ET.tostring(case, encoding='unicode')}"
    assert "all as expected" in out
    for name in names:
        assert name in out
    # the lab is as it was: no node left behind, settings back to the defaults
    h = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(lab.admin.url + "/api/nodes", headers=h, timeout=5).json() == []
    scp = requests.get(lab.admin.url + "/api/scp", headers=h, timeout=5).json()
    assert scp["port"] == lab.pacs.port and scp["refusal_mode"] == "reject" and scp["max_associations"] == 10
    assert not any(scp[k] for k in ("fault_delay_ms", "fault_abort_after", "fault_status", "fault_stall"))


def test_a_wrong_expectation_fails_the_run(lab):
    src = catalogue.default_path().read_text()
    # the happy path, but expecting a rejection: the runner must say MISMATCH and exit non-zero
    wrong = src.replace('name = "happy-path"', 'name = "happy-path-expected-wrong"', 1)
    wrong = wrong.replace('[scenario.expect.modality]\nkind = "ok"\nsent = 3',
                          '[scenario.expect.modality]\nkind = "rejected"\ncodes = "1/1/3"\nsent = 3', 1)
    assert wrong != src
    path = lab.workdir / "wrong.toml"
    path.write_text(wrong)
    junit = lab.workdir / "wrong.xml"
    r = lab.run_scenarios("run", "happy-path-expected-wrong", "calling-ae-not-registered", "--catalogue", str(path),
                          "--junit", str(junit))
    assert r.returncode != 0, r.stdout + r.stderr
    assert "MISMATCH" in r.stdout
    cases = _cases(junit)
    failure = cases["happy-path-expected-wrong"].find("failure")
    assert failure is not None and "expected rejected, observed ok" in failure.get("message")
    assert cases["calling-ae-not-registered"].find("failure") is None


def test_list_and_unknown_names(lab):
    r = lab.run_scenarios("list")
    assert r.returncode == 0 and "registry-down" in r.stdout
    r = lab.run_scenarios("run", "no-such-scenario")
    assert r.returncode == 2 and "unknown scenario" in r.stderr


COMMITMENT = ("commitment-report-wrong-port", "commitment-not-listening", "commitment-never-stored",
              "commitment-report-refused")


def test_the_storage_commitment_scenarios_pass(lab):
    junit = lab.workdir / "commitment.xml"
    r = lab.run_scenarios("run", *COMMITMENT, "--junit", str(junit))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    cases = _cases(junit)
    assert set(cases) == set(COMMITMENT)
    for name, case in cases.items():
        assert case.find("failure") is None and case.find("error") is None and case.find("skipped") is None, \
            f"{name}: {ET.tostring(case, encoding='unicode')}"


def test_a_commitment_scenario_with_the_wrong_expectation_fails(lab):
    src = catalogue.default_path().read_text()
    wrong = src.replace('committed = 2\nnot_committed = 1', 'committed = 3\nnot_committed = 0', 1)
    assert wrong != src
    path = lab.workdir / "wrong-commit.toml"
    path.write_text(wrong)
    r = lab.run_scenarios("run", "commitment-never-stored", "--catalogue", str(path))
    assert r.returncode != 0 and "expected committed 3, observed 2" in r.stdout, r.stdout + r.stderr
