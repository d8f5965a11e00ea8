"""The Redis key schema: every key name of DICOM Lab is built here and nowhere else.

    dicomlab:scp                       hash  listener settings (fields of ListenerSettings)
    dicomlab:nodes                     set   AE titles of the authorized nodes
    dicomlab:node:<AE>                 hash  one node (fields of Node)
    dicomlab:node:<AE>:status          hash  last accepted / rejected association, last echo
    dicomlab:events                    stream the bounded event stream
    dicomlab:studies                   zset  StudyInstanceUID scored by last received time
    dicomlab:study:<uid>               hash  patient / study fields, counts, last received
    dicomlab:study:<uid>:series        hash  SeriesInstanceUID -> JSON (modality, description, number)
    dicomlab:study:<uid>:instances     set   SOP Instance UIDs received (counts without duplicates)
    dicomlab:study:<uid>:series:<uid>:instances  set  the same, per series
    dicomlab:study:<uid>:series:<uid>:images     hash SOP Instance UID -> JSON (SOP class, instance number)
    dicomlab:sim:jobs                  list  simulator send requests waiting for a worker
    dicomlab:sim:job:<id>              hash  one send request and its progress
    dicomlab:scp:heartbeat             string  set by the PACS while it listens (with expiry)
    dicomlab:commitment:tx:<uid>       hash  one storage commitment request (dicomlab.commitments)
    dicomlab:commitment:due            zset  Transaction UIDs of pending reports, scored by the next attempt
    dicomlab:commitment:index          zset  Transaction UIDs scored by the time of the request (the listing)
    dicomlab:commitment:study:<uid>    string  the Transaction UID of a study's latest request
    dicomlab:schema                    string  the version of this schema (2: AE titles encoded)
    dicomlab:schema:lock               string  held while the admin API migrates (dicomlab.migrate)

An AE title goes into a key name encoded (``encode_ae``): percent-encoding of ``%``, ``:``,
space, the glob characters ``*?[]\\`` and anything outside printable ASCII. So a node called
``CT01:status`` has the key ``dicomlab:node:CT01%3Astatus`` and cannot land on CT01's status
hash, and the ACL pattern ``dicomlab:node:*:status`` matches status hashes only. The set
``dicomlab:nodes`` holds the titles as they are (they are values, not key names). Keys written
before the encoding are moved by ``dicomlab.migrate`` when the admin API starts.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

PREFIX = "dicomlab"

SCP = f"{PREFIX}:scp"
SCP_HEARTBEAT = f"{PREFIX}:scp:heartbeat"
NODES = f"{PREFIX}:nodes"
EVENTS = f"{PREFIX}:events"
STUDIES = f"{PREFIX}:studies"
SIM_JOBS = f"{PREFIX}:sim:jobs"

SCHEMA = f"{PREFIX}:schema"
SCHEMA_VERSION = "2"
SCHEMA_LOCK = f"{PREFIX}:schema:lock"
NODE_PREFIX = f"{PREFIX}:node:"

EVENTS_MAXLEN = 10_000

# Printable ASCII stays as it is, except the characters that would make a key ambiguous
# (``:`` separates the parts, ``%`` escapes) or match as a glob (SCAN and ACL patterns).
_SAFE = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in "%:*?[]\\")


def encode_ae(ae_title: str) -> str:
    """An AE title as it goes into a key name (UTF-8 percent-encoding)."""
    return quote(ae_title, safe=_SAFE)


def decode_ae(encoded: str) -> str:
    return unquote(encoded)


def node(ae_title: str) -> str:
    return f"{NODE_PREFIX}{encode_ae(ae_title)}"


def node_status(ae_title: str) -> str:
    return f"{NODE_PREFIX}{encode_ae(ae_title)}:status"


def node_title(key: str) -> str | None:
    """The AE title of a node or node-status key (``None`` for any other key)."""
    if not key.startswith(NODE_PREFIX):
        return None
    rest = key[len(NODE_PREFIX):].removesuffix(":status")
    return None if ":" in rest else decode_ae(rest)


def study(uid: str) -> str:
    return f"{PREFIX}:study:{uid}"


def study_series(uid: str) -> str:
    return f"{PREFIX}:study:{uid}:series"


def study_instances(uid: str) -> str:
    return f"{PREFIX}:study:{uid}:instances"


def series_instances(study_uid: str, series_uid: str) -> str:
    return f"{PREFIX}:study:{study_uid}:series:{series_uid}:instances"


COMMITMENT_DUE = f"{PREFIX}:commitment:due"
COMMITMENT_INDEX = f"{PREFIX}:commitment:index"


def commitment(transaction_uid: str) -> str:
    return f"{PREFIX}:commitment:tx:{transaction_uid}"


def commitment_study(study_uid: str) -> str:
    return f"{PREFIX}:commitment:study:{study_uid}"


def series_images(study_uid: str, series_uid: str) -> str:
    """Per instance of a series, what an IMAGE-level C-FIND answers (Query/Retrieve)."""
    return f"{PREFIX}:study:{study_uid}:series:{series_uid}:images"


def sim_job(job_id: str) -> str:
    return f"{PREFIX}:sim:job:{job_id}"
