"""``ct-simulator conformance``: the simulator's own statement, as text and as JSON."""

from __future__ import annotations

import json

from ct_simulator.cli import main
from dicomlab.conformance import simulator_statement


def test_the_statement_as_json_is_the_api_s(capsys, monkeypatch):
    monkeypatch.setenv("SIM_AE_TITLE", "CTX")
    monkeypatch.setenv("SIM_PORT", "11999")
    assert main(["conformance", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(simulator_statement("CTX", 11999)))


def test_the_statement_as_text_names_the_proposal_and_the_options(capsys):
    assert main(["conformance"]) == 0
    out = capsys.readouterr().out
    assert "CT Image Storage as SCU (C-STORE): Explicit VR Little Endian, Implicit VR Little Endian" in out
    assert "--transfer-syntax jpeg-ls" in out and "(proposed, not encodable)" in out
