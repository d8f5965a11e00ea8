"""Storage Commitment requests in Redis: what the PACS owes a modality, and what became of it.

The PACS writes a request when it answers an N-ACTION (``add``), and its
deliverer thread takes due requests (``claim``), tries to send the report, and
records each attempt (``retry`` / ``finish``). The admin API reads them back
(``listing``, ``study_states``). Keys (``dicomlab.keys``):

    dicomlab:commitment:tx:<uid>     hash   the request (fields below)
    dicomlab:commitment:due          zset   pending Transaction UIDs, scored by the next attempt (epoch s)
    dicomlab:commitment:index        zset   every Transaction UID, scored by the time of the request
    dicomlab:commitment:study:<uid>  string the study's latest Transaction UID

Why Redis, not the storage volume: a request lives from the N-ACTION to its
report or its last attempt (minutes), the admin API shows it, and several
listener processes share it; Redis already holds what the PACS decides with.
A request whose N-ACTION cannot be written to Redis is answered 0x0110
(processing failure) so the modality asks again later: nothing is promised
that the PACS could forget. A PACS restart loses nothing: the due set is read
again. A claim is a lease (``LEASE_SECONDS``): a process that dies while
delivering leaves the request to be claimed again when the lease ends.

States: ``requested`` (answered, report not yet tried), ``retrying`` (an
attempt failed, another is due), ``reported`` (the modality answered the
report with Success; the counts say what was committed), ``failed`` (every
attempt failed, or the node is gone). Finished requests expire after
``KEEP_SECONDS``; the index keeps the newest ``KEEP_REQUESTS``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from . import keys
from .errors import RegistryUnavailable

STATES = ("requested", "retrying", "reported", "failed")
LEASE_SECONDS = 120
KEEP_SECONDS = 7 * 24 * 3600
KEEP_REQUESTS = 1000

# the first due request (score <= now), leased until now + lease: one caller gets it
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #ids == 0 then return false end
redis.call('ZADD', KEYS[1], ARGV[2], ids[1])
return ids[1]
"""


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (redis.RedisError, OSError) as exc:
        raise RegistryUnavailable(f"the registry (Redis) is unreachable: {exc}") from exc


def _decode(raw: dict[str, str]) -> dict[str, Any]:
    """A request hash as the API shows it (refs and failures parsed, numbers as numbers)."""
    out: dict[str, Any] = dict(raw)
    for name in ("refs", "failures", "studies"):
        out[name] = json.loads(raw.get(name) or "[]")
    for name in ("attempts", "max_attempts", "committed", "failed", "requested"):
        if name in raw:
            out[name] = int(raw[name])
    for name in ("created", "updated", "next_attempt"):
        if name in raw:
            out[name] = float(raw[name]) if raw[name] else None
    return out


class Commitments:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def add(self, transaction_uid: str, calling_aet: str, peer: str, refs: list[tuple[str, str]],
            studies: list[str], due: float, max_attempts: int) -> None:
        now = time.time()
        record = {"transaction_uid": transaction_uid, "state": "requested", "calling_aet": calling_aet,
                  "peer": peer, "refs": json.dumps(refs), "requested": str(len(refs)),
                  "studies": json.dumps(studies), "attempts": "0", "max_attempts": str(max_attempts),
                  "created": f"{now:.3f}", "updated": f"{now:.3f}", "next_attempt": f"{due:.3f}",
                  "last_error": "", "committed": "0", "failed": "0", "failures": "[]"}
        with _errors():
            pipe = self.client.pipeline()
            pipe.delete(keys.commitment(transaction_uid))  # a Transaction UID asked again: the newest request
            pipe.hset(keys.commitment(transaction_uid), mapping=record)
            pipe.zadd(keys.COMMITMENT_INDEX, {transaction_uid: now})
            pipe.zadd(keys.COMMITMENT_DUE, {transaction_uid: due})
            for study in studies:
                pipe.set(keys.commitment_study(study), transaction_uid, ex=KEEP_SECONDS)
            pipe.execute()
            self._trim()

    def _trim(self) -> None:
        old = self.client.zrange(keys.COMMITMENT_INDEX, 0, -KEEP_REQUESTS - 1)
        if old:
            pipe = self.client.pipeline()
            pipe.zrem(keys.COMMITMENT_INDEX, *old)
            pipe.zrem(keys.COMMITMENT_DUE, *old)
            pipe.delete(*(keys.commitment(t) for t in old))
            pipe.execute()

    def claim(self, now: float | None = None, lease: float = LEASE_SECONDS) -> str | None:
        """A due Transaction UID, leased to the caller (None: nothing is due)."""
        now = time.time() if now is None else now
        with _errors():
            # EVAL, not a registered script: the pacs ACL user has no SCRIPT LOAD
            got = self.client.eval(_CLAIM, 1, keys.COMMITMENT_DUE, f"{now:.3f}", f"{now + lease:.3f}")
        return str(got) if got else None

    def get(self, transaction_uid: str) -> dict[str, Any] | None:
        with _errors():
            raw = self.client.hgetall(keys.commitment(transaction_uid))
        return _decode(raw) if raw else None

    def retry(self, transaction_uid: str, attempts: int, due: float, error: str) -> None:
        with _errors():
            pipe = self.client.pipeline()
            pipe.hset(keys.commitment(transaction_uid), mapping={
                "state": "retrying", "attempts": str(attempts), "next_attempt": f"{due:.3f}",
                "last_error": error, "updated": f"{time.time():.3f}"})
            pipe.zadd(keys.COMMITMENT_DUE, {transaction_uid: due})
            pipe.execute()

    def finish(self, transaction_uid: str, state: str, attempts: int, error: str = "",
               committed: int | None = None, failures: list[dict[str, str]] | None = None) -> None:
        fields = {"state": state, "attempts": str(attempts), "last_error": error, "next_attempt": "",
                  "updated": f"{time.time():.3f}"}
        if committed is not None:
            fields["committed"] = str(committed)
        if failures is not None:
            fields["failed"] = str(len(failures))
            fields["failures"] = json.dumps(failures)
        with _errors():
            pipe = self.client.pipeline()
            pipe.hset(keys.commitment(transaction_uid), mapping=fields)
            pipe.expire(keys.commitment(transaction_uid), KEEP_SECONDS)
            pipe.zrem(keys.COMMITMENT_DUE, transaction_uid)
            pipe.execute()

    def listing(self, limit: int = 100, state: str | None = None) -> list[dict[str, Any]]:
        """The newest requests first (without their instance lists)."""
        with _errors():
            ids = self.client.zrevrange(keys.COMMITMENT_INDEX, 0, max(0, limit - 1) if state is None else -1)
            pipe = self.client.pipeline(transaction=False)
            for t in ids:
                pipe.hgetall(keys.commitment(t))
            rows = [_decode(r) for r in pipe.execute() if r]
        rows = [r for r in rows if state is None or r.get("state") == state][:limit]
        for r in rows:
            r.pop("refs", None)
        return rows

    def study_states(self, study_uids: list[str]) -> dict[str, dict[str, Any]]:
        """Per study: the state, counts and Transaction UID of its latest request (absent: none)."""
        if not study_uids:
            return {}
        with _errors():
            pipe = self.client.pipeline(transaction=False)
            for uid in study_uids:
                pipe.get(keys.commitment_study(uid))
            txs = pipe.execute()
            pipe = self.client.pipeline(transaction=False)
            for tx in txs:
                pipe.hmget(keys.commitment(tx or "-"), "state", "committed", "failed", "requested", "updated")
            rows = pipe.execute()
        out: dict[str, dict[str, Any]] = {}
        for uid, tx, row in zip(study_uids, txs, rows, strict=True):
            if tx and row and row[0]:
                out[uid] = {"transaction_uid": tx, "state": row[0], "committed": int(row[1] or 0),
                            "failed": int(row[2] or 0), "requested": int(row[3] or 0),
                            "updated": float(row[4] or 0)}
        return out
