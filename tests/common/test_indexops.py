"""An index op writes exactly the index the readers expect (study set, series set, study
zset, the per-instance JSON, the study and series hashes), against a real Redis."""

from __future__ import annotations

import json

import redis

from dicomlab import indexops, keys
from dicomlab.registry import Registry

META = {"study_uid": "1.2.3", "series_uid": "1.2.3.4", "sop_instance_uid": "1.2.3.4.5", "patient_name": "DOE^JÖHN",
        "patient_id": "P1", "study_date": "20261201", "modality": "CT", "series_number": "2",
        "series_description": "AXIAL", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "instance_number": "5"}


def _apply(client, *ops):
    pipe = client.pipeline(transaction=False)
    for op in ops:
        indexops.apply(pipe, op)
    pipe.execute()


def test_record_instance_full_then_short_writes_the_whole_index(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    _apply(client, indexops.record_instance(META, full=True, at=1764547200.25))
    second = {**META, "sop_instance_uid": "1.2.3.4.6", "instance_number": "6", "sop_class_uid": ""}
    _apply(client, indexops.record_instance(second, full=False, at=1764547201.5))

    assert client.smembers(keys.study_instances("1.2.3")) == {"1.2.3.4.5", "1.2.3.4.6"}
    assert client.smembers(keys.series_instances("1.2.3", "1.2.3.4")) == {"1.2.3.4.5", "1.2.3.4.6"}
    assert client.zrange(keys.STUDIES, 0, -1, withscores=True) == [("1.2.3", 1764547201.5)]
    # the second had no SOP class: no per-instance record (read from its file when a query needs it)
    assert {k: json.loads(v) for k, v in client.hgetall(keys.series_images("1.2.3", "1.2.3.4")).items()} == {
        "1.2.3.4.5": {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "instance_number": "5"}}
    assert json.loads(client.hget(keys.study_series("1.2.3"), "1.2.3.4")) == {
        "series_uid": "1.2.3.4", "modality": "CT", "series_description": "AXIAL", "series_number": "2"}
    study = client.hgetall(keys.study("1.2.3"))
    assert study == {"study_uid": "1.2.3", **{k: META.get(k, "") for k in indexops.STUDY_FIELDS},
                     "last_received": "1764547201.500"}
    # what the admin API and C-FIND read back
    got = Registry(client).get_study("1.2.3")
    assert got["instances"] == 2 and got["patient_name"] == "DOE^JÖHN"


def test_record_instance_is_idempotent(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    op = indexops.record_instance(META, full=True, at=10.0)
    _apply(client, op)
    before = {k: client.dump(k) for k in client.keys("*")}
    _apply(client, op)  # a journal replayed twice
    assert {k: client.dump(k) for k in client.keys("*")} == before
