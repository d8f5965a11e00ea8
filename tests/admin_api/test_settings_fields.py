"""The settings fields are declared once (dicomlab.settings) and the admin API's schemas, its
OpenAPI document and the scenario runner's writable lists are built from that declaration."""

from __future__ import annotations

import dataclasses

import pytest
from marshmallow import ValidationError

from admin_api import schemas
from admin_api.schemas import setting_fields
from ct_simulator.scenarios.adminapi import NODE_WRITABLE, SCP_WRITABLE
from dicomlab.settings import LIMITS, RANGES, ListenerSettings, Node, setting


def test_every_field_is_in_every_schema_and_writable_list():
    scp = [f.name for f in dataclasses.fields(ListenerSettings)]
    node = [f.name for f in dataclasses.fields(Node)]
    assert list(schemas.ScpPatch().fields) == scp and list(SCP_WRITABLE) == scp
    assert list(schemas.ScpOut().fields) == [*scp, "listener"]
    assert list(schemas.NodeIn().fields) == node == list(schemas.NodePatch().fields) == list(NODE_WRITABLE)
    assert list(schemas.NodeOut().fields) == [*node, "status"]
    assert set(LIMITS) < set(RANGES) and "max_associations" in RANGES and "fault_status" in RANGES


def test_the_openapi_document_shows_each_declared_rule(app):
    with app.app_context():
        spec = app.spec["components"]["schemas"]
    patch, node_in = spec["ScpPatch"]["properties"], spec["NodeIn"]["properties"]
    for f in dataclasses.fields(ListenerSettings):
        prop = patch[f.name]
        assert prop.get("description") == f.metadata["description"], f.name
        if f.name in RANGES:
            assert (prop["minimum"], prop["maximum"]) == RANGES[f.name], f.name
        if f.metadata["choices"]:
            assert prop["enum"] == list(f.metadata["choices"]), f.name
    assert set(spec["NodeIn"]["required"]) == {"ae_title", "host"}
    assert node_in["tls"]["enum"] == ["off", "allowed", "required"] and node_in["description"]["maxLength"] == 256


def test_a_new_setting_is_one_declaration():
    """A record with one more field gets a validated API field, with its words, from that field alone."""

    @dataclasses.dataclass
    class Record:
        ae_title: str = setting(kind="ae_title", description="who")
        retries: int = setting(3, kind="int", range=(1, 9), description="how many times")
        mode: str = setting("a", kind="choice", choices=("a", "b"), description="which way")

    built = setting_fields(Record, "in")
    schema = schemas.Strict.from_dict(built, name="Record")()
    assert schema.load({"ae_title": "CT01"}) == {"ae_title": "CT01", "retries": 3, "mode": "a"}
    with pytest.raises(ValidationError) as err:
        schema.load({"ae_title": "CT01", "retries": 10, "mode": "c"})
    assert err.value.messages == {"retries": ["retries is a whole number from 1 to 9."],
                                  "mode": ["mode is one of a, b."]}
    assert built["retries"].metadata == {"description": "how many times", "minimum": 1, "maximum": 9}
