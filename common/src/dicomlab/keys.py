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
    dicomlab:sim:jobs                  list  simulator send requests waiting for a worker
    dicomlab:sim:job:<id>              hash  one send request and its progress
    dicomlab:scp:heartbeat             string  set by the PACS while it listens (with expiry)
"""

from __future__ import annotations

PREFIX = "dicomlab"

SCP = f"{PREFIX}:scp"
SCP_HEARTBEAT = f"{PREFIX}:scp:heartbeat"
NODES = f"{PREFIX}:nodes"
EVENTS = f"{PREFIX}:events"
STUDIES = f"{PREFIX}:studies"
SIM_JOBS = f"{PREFIX}:sim:jobs"

EVENTS_MAXLEN = 10_000


def node(ae_title: str) -> str:
    return f"{PREFIX}:node:{ae_title}"


def node_status(ae_title: str) -> str:
    return f"{PREFIX}:node:{ae_title}:status"


def study(uid: str) -> str:
    return f"{PREFIX}:study:{uid}"


def study_series(uid: str) -> str:
    return f"{PREFIX}:study:{uid}:series"


def study_instances(uid: str) -> str:
    return f"{PREFIX}:study:{uid}:instances"


def series_instances(study_uid: str, series_uid: str) -> str:
    return f"{PREFIX}:study:{study_uid}:series:{series_uid}:instances"


def sim_job(job_id: str) -> str:
    return f"{PREFIX}:sim:job:{job_id}"
