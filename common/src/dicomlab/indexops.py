"""Index writes as data: an op is a small JSON-able dict, applied to a Redis
pipeline by ``apply`` -- the one function used by the live path (an op riding
with its event, ``EventLog.emit(ops=[...])``), by the on-disk journal's replay
(``dicomlab.journal``) and by the PACS's reconcile.

Every op is idempotent (sets, hashes, a zset score taken from the op), so an
op applied twice leaves the same index.

    {"op": "record_instance", "meta": {...}, "full": bool, "time": float}
    {"op": "remove_instance", "study_uid": ..., "series_uid": ..., "sop_instance_uid": ...}
    {"op": "node_status", "ae_title": ..., "fields": {...}}
"""

from __future__ import annotations

import json
import time
from typing import Any

from . import keys

Op = dict[str, Any]

STUDY_FIELDS = ("patient_name", "patient_id", "study_date", "study_description", "accession_number", "calling_aet",
                "study_time", "study_id", "patient_birth_date", "patient_sex")
SERIES_FIELDS = ("modality", "series_description", "series_number")
# Per instance (an IMAGE-level C-FIND): written when the meta has them (a C-STORE, or the file the
# reconcile read); an instance without them is read from its file when a query needs it.
INSTANCE_FIELDS = ("sop_class_uid", "instance_number")
INDEX_META = ("study_uid", "series_uid", "sop_instance_uid", *STUDY_FIELDS, *SERIES_FIELDS, *INSTANCE_FIELDS)


def record_instance(meta: dict[str, str], full: bool = True, at: float | None = None) -> Op:
    """Count one stored instance in its study and series (``full``: also write the
    study and series fields, else only the last received time)."""
    return {"op": "record_instance", "meta": {k: meta.get(k, "") for k in INDEX_META}, "full": bool(full),
            "time": time.time() if at is None else at}


def remove_instance(study_uid: str, series_uid: str, sop_instance_uid: str) -> Op:
    """Take an instance out of a study and series (it moved); an emptied series or study goes."""
    return {"op": "remove_instance", "study_uid": study_uid, "series_uid": series_uid,
            "sop_instance_uid": sop_instance_uid}


def node_status(ae_title: str, **fields: Any) -> Op:
    """A node's last-association status, written only while the node is registered."""
    return {"op": "node_status", "ae_title": ae_title.strip(" "), "fields": fields}


def field_text(value: Any) -> str:
    """A hash field value: JSON for lists and dicts, text for the rest."""
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


# KEYS: nodes, node status; ARGV: title, field, value, ...
_STATUS_IF_NODE = (
    "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then "
    "redis.call('HSET', KEYS[2], unpack(ARGV, 2)) end return 0"
)
# KEYS: study instances, series instances, study series hash, study hash, studies zset, series images
# ARGV: sop, series uid, study uid
_REMOVE = (
    "redis.call('SREM', KEYS[1], ARGV[1]) redis.call('SREM', KEYS[2], ARGV[1]) "
    "redis.call('HDEL', KEYS[6], ARGV[1]) "
    "if redis.call('SCARD', KEYS[2]) == 0 then redis.call('HDEL', KEYS[3], ARGV[2]) end "
    "if redis.call('SCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[3], KEYS[4]) "
    "redis.call('ZREM', KEYS[5], ARGV[3]) end return 0"
)


def apply(pipe: Any, op: Op) -> None:
    """Queue the write-only commands of ``op`` on ``pipe`` (a redis pipeline)."""
    kind = op["op"]
    if kind == "record_instance":
        _record(pipe, op["meta"], op["full"], float(op["time"]))
    elif kind == "remove_instance":
        study, series = op["study_uid"], op["series_uid"]
        pipe.eval(_REMOVE, 6, keys.study_instances(study), keys.series_instances(study, series),
                  keys.study_series(study), keys.study(study), keys.STUDIES, keys.series_images(study, series),
                  op["sop_instance_uid"], series, study)
    elif kind == "node_status":
        flat: list[str] = []
        for k, v in op["fields"].items():
            flat += [k, field_text(v)]
        title = op["ae_title"]
        pipe.eval(_STATUS_IF_NODE, 2, keys.NODES, keys.node_status(title), title, *flat)
    else:
        raise ValueError(f"unknown index op {kind!r}")


# One stored instance, one command (six, as separate commands, cost the PACS ~0.16 ms of a
# C-STORE's client-side time in redis-py: packing and parsing are per command).
# KEYS: study instances, series instances, studies zset, series images, study hash, study series hash
# ARGV: sop, study uid, score, instance json ('' = none), series uid, series json ('' = only the
# last received time), then the study hash's field/value pairs
_RECORD = (
    "redis.call('SADD', KEYS[1], ARGV[1]) redis.call('SADD', KEYS[2], ARGV[1]) "
    "redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2]) "
    "if ARGV[4] ~= '' then redis.call('HSET', KEYS[4], ARGV[1], ARGV[4]) end "
    "if ARGV[6] ~= '' then redis.call('HSET', KEYS[6], ARGV[5], ARGV[6]) end "
    "redis.call('HSET', KEYS[5], unpack(ARGV, 7)) return 0"
)


def _record(pipe: Any, meta: dict[str, str], full: bool, at: float) -> None:
    study, series, sop = meta["study_uid"], meta["series_uid"], meta["sop_instance_uid"]
    instance = json.dumps({k: meta.get(k, "") for k in INSTANCE_FIELDS}) if meta.get("sop_class_uid") else ""
    last = f"{at:.3f}"
    if full:
        series_json = json.dumps({"series_uid": series, **{k: meta.get(k, "") for k in SERIES_FIELDS}})
        fields = ["study_uid", study]
        for k in STUDY_FIELDS:
            fields += [k, str(meta.get(k, ""))]
        fields += ["last_received", last]
    else:  # the study and series fields were written for an earlier instance of the series
        series_json, fields = "", ["last_received", last]
    pipe.eval(_RECORD, 6, keys.study_instances(study), keys.series_instances(study, series), keys.STUDIES,
              keys.series_images(study, series), keys.study(study), keys.study_series(study),
              sop, study, repr(float(at)), instance, series, series_json, *fields)
