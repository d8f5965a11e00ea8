"""The conformance statements and check, against real settings changed through the API,
and against what the real PACS and the real CT simulator then do."""

from __future__ import annotations

import pytest
from pynetdicom.presentation import DEFAULT_TRANSFER_SYNTAXES

from dicomlab import keys
from dicomlab.conformance import PACS_MAX_PDU, SIM_DEFAULT_PROPOSAL, SIM_ECHO_SYNTAXES
from dicomlab.dicom import CT_IMAGE_STORAGE, EXPLICIT_VR_LE, JPEG_LOSSLESS_SV1, RLE_LOSSLESS, VERIFICATION

CT = {"ae_title": "CT01", "host": "127.0.0.1", "port": 11113, "services": ["C-ECHO", "C-STORE"]}


def check(api, query: str = "") -> dict:
    r = api.get(f"/api/conformance/check{query}")
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_the_statement_follows_the_live_settings(api, registry):
    r = api.patch("/api/scp", json={"ae_title": "MAINPACS", "max_associations": 7,
                                    "transfer_syntaxes": [EXPLICIT_VR_LE, RLE_LOSSLESS],
                                    "max_associations_per_node": 3, "refusal_mode": "abort"})
    assert r.status_code == 200, r.get_json()
    st = api.get("/api/conformance").get_json()
    assert st["application_entity"]["ae_title"] == "MAINPACS"
    assert st["application_entity"]["port"] == registry.get_listener().port
    classes = {s["uid"]: s for s in st["sop_classes"]}
    assert set(classes) == {VERIFICATION, *registry.get_listener().sop_classes}
    assert [t["name"] for t in classes[CT_IMAGE_STORAGE]["transfer_syntaxes"]] == \
        ["Explicit VR Little Endian", "RLE Lossless"]
    assert st["limits"]["max_associations"]["value"] == 7
    assert st["limits"]["max_associations_per_node"]["value"] == 3
    policy = {row["order"]: row for row in st["association_policy"]}
    assert "more than 7 associations open" in policy["5"]["condition"]
    assert "more than 3 open from the same calling AE title" in policy["5b"]["condition"]
    assert "called AE title is not 'MAINPACS'" in policy["2"]["condition"]
    assert "refusal_mode abort" in policy["3"]["answer"]
    assert st["pdu"]["max_pdu_receive"] == PACS_MAX_PDU
    assert st["settings"]["max_associations"] == 7
    stored_tls = registry.get_listener().to_dict().get("tls_enabled")  # once the TLS settings exist
    assert st["tls"]["enabled"] is bool(stored_tls)
    assert ("plain TCP" in st["tls"]["words"]) is (not stored_tls)


def test_a_tls_setting_present_in_redis_appears_in_the_statement(api, registry):
    registry.client.hset(keys.SCP, mapping={"tls_enabled": "1", "tls_port": "2762"})
    api.post("/api/nodes", json={**CT})
    tls = api.get("/api/conformance").get_json()["tls"]
    assert {k: str(int(v)) for k, v in tls["settings"].items()} == {"tls_enabled": "1", "tls_port": "2762"}
    assert tls["enabled"] is True and "port 2762" in tls["words"]
    registry.client.hset(keys.SCP, "tls_enabled", "0")
    tls = api.get("/api/conformance").get_json()["tls"]
    assert tls["enabled"] is False and "configured but off" in tls["words"]


def test_the_check_names_what_would_fail(api):
    c = check(api)
    assert not c["ok"] and "'CT01' is not an authorized node" in c["summary"]
    assert api.post("/api/nodes", json=CT).status_code == 201
    c = check(api)
    assert c["ok"], c["summary"]
    store = c["contexts"][0]
    assert [t["uid"] for t in store["overlap"]] == list(SIM_DEFAULT_PROPOSAL)
    assert store["negotiated"]["uid"] == EXPLICIT_VR_LE

    # Remove the simulator's transfer syntaxes from the listener: the check names them.
    assert api.patch("/api/scp", json={"transfer_syntaxes": [JPEG_LOSSLESS_SV1, RLE_LOSSLESS]}).status_code == 200
    c = check(api)
    assert not c["ok"]
    assert ("CT Image Storage with Explicit VR Little Endian, Implicit VR Little Endian: the PACS accepts none "
            "of these transfer syntaxes (it accepts JPEG Lossless SV1, RLE Lossless); every C-STORE would be "
            "refused at negotiation") in c["summary"]
    assert c["contexts"][0]["overlap"] == []
    # ... and a proposal the PACS takes is found among the options
    options = {o["option"]: o for o in c["transfer_syntax_options"]}
    assert options["--transfer-syntax rle"]["ok"]
    assert "which the simulator cannot encode" in options["--transfer-syntax jpeg-lossless"]["words"]
    c = check(api, "?transfer_syntax=rle")
    assert c["contexts"][0]["ok"] and c["contexts"][0]["negotiated"]["uid"] == RLE_LOSSLESS
    # the C-ECHO proposes uncompressed syntaxes only: with none of them accepted, it fails too
    assert not c["contexts"][1]["ok"] and "Verification with Implicit VR Little Endian" in c["summary"]

    # No storage SOP class for CT; a node without C-STORE.
    api.patch("/api/scp", json={"transfer_syntaxes": [EXPLICIT_VR_LE], "sop_classes": ["1.2.840.10008.5.1.4.1.1.7"]})
    c = check(api)
    assert "the PACS does not accept the SOP class CT Image Storage" in c["summary"]
    assert check(api, "?sop_class=sc")["ok"]
    api.patch("/api/nodes/CT01", json={"services": ["C-ECHO"]})
    c = check(api, "?sop_class=sc")
    assert not c["ok"] and "not allowed C-STORE" in c["summary"]
    assert c["contexts"][1]["ok"], "C-ECHO is still fine"


@pytest.mark.parametrize("query, field", [("?transfer_syntax=bogus", "transfer_syntax"),
                                          ("?sop_class=ct%0a", "sop_class"), ("?sop_class=1.02", "sop_class")])
def test_a_bad_query_is_refused_in_words(api, query, field):
    r = api.get(f"/api/conformance/check{query}")
    assert r.status_code == 422
    assert field in r.get_json()["detail"]["fields"]


def test_the_token_applies(client):
    for path in ("/api/conformance", "/api/conformance/simulator", "/api/conformance/check"):
        assert client.get(path).status_code == 401


def test_the_simulator_statement_is_what_the_simulator_does(api):
    from ct_simulator import syntaxes
    from ct_simulator.cli import SOP_CLASSES

    st = api.get("/api/conformance/simulator").get_json()
    store = next(s for s in st["sop_classes"] if s["service"] == "C-STORE")
    assert tuple(t["uid"] for t in store["transfer_syntaxes"]) == syntaxes.DEFAULT_PROPOSAL
    assert list(SIM_ECHO_SYNTAXES) == list(DEFAULT_TRANSFER_SYNTAXES)  # build_context(VERIFICATION)'s default
    encodable = {t["uid"] for t in st["encodable"]}
    assert encodable == {u for u in syntaxes.ALIASES.values() if syntaxes.can_encode(u)}
    assert {o["uid"] for o in st["on_request"]["sop_classes"]} == set(SOP_CLASSES.values())


def test_the_pacs_parameters_in_the_statement_are_the_pacs_s(registry, tmp_path):
    from dicomlab.conformance import PACS_TIMEOUTS
    from dicomlab.events import EventLog
    from dicomlab.settings import ListenerSettings
    from pacs.listener import Pacs
    from pacs.storage import Storage

    p = Pacs(registry, EventLog(None, source="test"), Storage(tmp_path), ListenerSettings())
    assert p.ae.maximum_pdu_size == PACS_MAX_PDU
    assert {k: getattr(p.ae, k) for k in PACS_TIMEOUTS} == PACS_TIMEOUTS


def test_the_check_agrees_with_a_real_send(api, pacs):
    """What the check says would fail does fail, against the real PACS, sent by the real simulator."""
    from ct_simulator.iod import StudyPlan
    from ct_simulator.network import Link
    from ct_simulator.sender import SendOptions, echo, send

    api.post("/api/nodes", json=CT)
    link = Link("127.0.0.1", pacs.port, calling_aet="CT01", called_aet="PACS")

    def real(syntaxes: tuple[str, ...]):
        return send(StudyPlan(slices=1, rows=32, cols=32, seed=3), link, SendOptions(transfer_syntaxes=syntaxes))

    assert check(api)["ok"]
    assert real(SIM_DEFAULT_PROPOSAL).ok
    api.patch("/api/scp", json={"transfer_syntaxes": [RLE_LOSSLESS]})
    c = check(api)
    assert not c["ok"] and "every C-STORE would be refused at negotiation" in c["summary"]
    rep = real(SIM_DEFAULT_PROPOSAL)
    assert not rep.ok and rep.problem is not None and rep.problem.kind == "no-context"
    c = check(api, "?transfer_syntax=rle")
    assert c["contexts"][0]["ok"] and not c["contexts"][1]["ok"]
    assert real((RLE_LOSSLESS,)).ok
    assert not echo(link).ok  # as the check said: no uncompressed syntax, no C-ECHO
    api.patch("/api/scp", json={"transfer_syntaxes": [RLE_LOSSLESS, EXPLICIT_VR_LE]})
    assert check(api, "?transfer_syntax=rle")["ok"]
    assert echo(link).ok
