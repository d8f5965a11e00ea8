"""The registry: authorized nodes, listener settings, node status, the study
index and the simulator job queue, all in Redis under the schema of ``keys``.

The connection is passed in, never global. Every Redis failure surfaces as
``RegistryUnavailable`` so callers handle one error family.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import redis

from . import indexops, keys
from .aetitle import check_ae_title
from .errors import Conflict, NotFound, RegistryUnavailable, ValidationError
from .events import Event
from .redisio import OwnConnection, as_dict
from .settings import ListenerSettings, Node


def connect(url: str, timeout: float = 2.0) -> redis.Redis:
    """A client that fails fast (the PACS decides associations with it)."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
    )


_field = indexops.field_text


@contextmanager
def _registry_errors() -> Iterator[None]:
    try:
        yield
    except (redis.RedisError, OSError) as exc:
        raise RegistryUnavailable(f"the registry (Redis) is unreachable: {exc}") from exc


class Registry:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._own = OwnConnection(client, per_thread=True)
        self.seeded = False  # the last seed_listener stored a setting Redis did not have

    # -- health ---------------------------------------------------------
    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except (redis.RedisError, OSError):
            return False

    # -- listener settings ---------------------------------------------
    def seed_listener(self, defaults: ListenerSettings) -> ListenerSettings:
        """Store each default that Redis does not have yet: stored settings win."""
        defaults.validate()
        with _registry_errors():
            pipe = self.client.pipeline()
            for k, v in defaults.to_redis().items():
                pipe.hsetnx(keys.SCP, k, v)
            self.seeded = any(pipe.execute())  # a setting was missing: Redis is new, or came back empty
        return self.get_listener()

    def get_listener(self) -> ListenerSettings:
        with _registry_errors():
            raw = self.client.hgetall(keys.SCP)
        return ListenerSettings.from_redis(raw)

    def update_listener(self, changes: dict[str, Any]) -> tuple[ListenerSettings, ListenerSettings]:
        """Apply ``changes`` (validated as a whole) and return (before, after)."""
        names = {f.name for f in fields(ListenerSettings)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValidationError(f"Unknown setting(s): {', '.join(unknown)}.", unknown[0])
        before = self.get_listener()
        after = ListenerSettings(**{**before.to_dict(), **changes}).validate()
        with _registry_errors():
            self.client.hset(keys.SCP, mapping=after.to_redis())
        return before, after

    def heartbeat(self, info: dict[str, Any], ttl: int = 10) -> None:
        with _registry_errors():
            self.client.set(keys.SCP_HEARTBEAT, json.dumps(info), ex=ttl)

    def get_heartbeat(self) -> dict[str, Any] | None:
        with _registry_errors():
            raw = self.client.get(keys.SCP_HEARTBEAT)
        return json.loads(raw) if raw else None

    # -- the association check ------------------------------------------
    def authorization_snapshot(self, calling_aet: str) -> tuple[ListenerSettings, Node | None]:
        """Listener settings and the calling node, read fresh in one round trip."""
        title = calling_aet.strip(" ")
        with _registry_errors():  # on the thread's own connection: one association = one thread (redisio.py)
            scp_raw, node_raw = map(as_dict, self._own.round_trip([("HGETALL", keys.SCP),
                                                                   ("HGETALL", keys.node(title))],
                                                                  reads_only=True))
        if not scp_raw:
            # Redis answered but lost its state (restarted empty): nothing can be checked.
            raise RegistryUnavailable("the registry has no listener settings (was Redis restarted empty?)")
        node = Node.from_redis(node_raw) if node_raw else None
        return ListenerSettings.from_redis(scp_raw), node

    # -- nodes ------------------------------------------------------------
    def node_titles(self) -> set[str]:
        with _registry_errors():
            return set(self.client.smembers(keys.NODES))

    def list_nodes(self) -> list[Node]:
        titles = sorted(self.node_titles())
        with _registry_errors():
            pipe = self.client.pipeline(transaction=False)
            for t in titles:
                pipe.hgetall(keys.node(t))
            raws = pipe.execute()
        return [Node.from_redis(r) for r in raws if r]

    def get_node(self, ae_title: str) -> Node:
        title = check_ae_title(ae_title)
        with _registry_errors():
            raw = self.client.hgetall(keys.node(title))
        if not raw:
            raise NotFound(f"No authorized node has the AE title {title!r}.")
        return Node.from_redis(raw)

    def add_node(self, node: Node) -> Node:
        node.validate()
        with _registry_errors():
            if not self.client.sadd(keys.NODES, node.ae_title):
                raise Conflict(f"A node with the AE title {node.ae_title!r} already exists.")
            self.client.hset(keys.node(node.ae_title), mapping=node.to_redis())
        return node

    def replace_node(self, ae_title: str, node: Node) -> Node:
        """PUT: the node as given; a new AE title renames it (409 if taken)."""
        current = self.get_node(ae_title)
        node.validate()
        with _registry_errors():
            if node.ae_title != current.ae_title:
                if not self.client.sadd(keys.NODES, node.ae_title):
                    raise Conflict(f"A node with the AE title {node.ae_title!r} already exists.")
                pipe = self.client.pipeline()
                pipe.delete(keys.node(current.ae_title), keys.node_status(current.ae_title))
                pipe.srem(keys.NODES, current.ae_title)
                pipe.hset(keys.node(node.ae_title), mapping=node.to_redis())
                pipe.execute()
            else:
                pipe = self.client.pipeline()
                pipe.delete(keys.node(node.ae_title))
                pipe.hset(keys.node(node.ae_title), mapping=node.to_redis())
                pipe.execute()
        return node

    def patch_node(self, ae_title: str, changes: dict[str, Any]) -> Node:
        current = self.get_node(ae_title)
        allowed = {f.name for f in fields(Node)}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise ValidationError(f"Unknown field(s): {', '.join(unknown)}.", unknown[0])
        return self.replace_node(current.ae_title, Node(**{**current.to_dict(), **changes}))

    def delete_node(self, ae_title: str) -> Node:
        node = self.get_node(ae_title)
        with _registry_errors():
            pipe = self.client.pipeline()
            pipe.srem(keys.NODES, node.ae_title)
            pipe.delete(keys.node(node.ae_title), keys.node_status(node.ae_title))
            pipe.execute()
        return node

    def set_node_status(self, ae_title: str, **status: Any) -> None:
        """Record the last accepted / rejected association or echo of a node."""
        title = ae_title.strip(" ")
        data = {k: _field(v) for k, v in status.items()}
        with _registry_errors():
            if self.client.sismember(keys.NODES, title):
                self.client.hset(keys.node_status(title), mapping=data)

    def node_status_commands(self, pipe: Any, ae_title: str, **status: Any) -> None:
        """Write-only form of set_node_status, to ride in a pipeline with an event: the
        status is written only if the node is (still) registered."""
        indexops.apply(pipe, indexops.node_status(ae_title, **status))

    def get_node_status(self, ae_title: str) -> dict[str, str]:
        with _registry_errors():
            status: dict[str, str] = self.client.hgetall(keys.node_status(ae_title.strip(" ")))
            return status

    # -- events -------------------------------------------------------------
    def read_events(
        self, since: str | None = None, limit: int = 100, types: set[str] | None = None
    ) -> list[Event]:
        """Events after stream id ``since`` (oldest first), or the latest ``limit``."""
        with _registry_errors():
            if since:
                raw = self.client.xrange(keys.EVENTS, min=f"({since}", count=limit if not types else None)
            else:
                raw = list(reversed(self.client.xrevrange(keys.EVENTS, count=limit if not types else None)))
        events = [Event.from_stream(i, f) for i, f in raw]
        if types:
            events = [e for e in events if e.type in types]
            events = events[:limit] if since else events[-limit:]
        return events

    def wait_events(self, last_id: str, block_ms: int = 15000) -> list[Event]:
        """Block until events after ``last_id`` arrive (``$`` = only new ones)."""
        with _registry_errors():
            res = self.client.xread({keys.EVENTS: last_id}, block=block_ms, count=500)
        out: list[Event] = []
        for _stream, entries in res or []:
            out.extend(Event.from_stream(i, f) for i, f in entries)
        return out

    def last_event_id(self) -> str:
        with _registry_errors():
            last = self.client.xrevrange(keys.EVENTS, count=1)
        return last[0][0] if last else "0-0"

    # -- study index ----------------------------------------------------------
    def record_instance(self, meta: dict[str, str], pipe: "redis.client.Pipeline | None" = None,
                        full: bool = True) -> None:
        """Count one stored instance in its study (a replaced instance counts once).

        Write-only commands (``indexops.record_instance``), so they can ride in a
        caller's pipeline (``pipe``) with other writes: one round trip. ``meta``:
        study_uid, series_uid, sop_instance_uid, patient_name, patient_id,
        study_date, study_description, accession_number, modality,
        series_description, series_number, calling_aet.
        """
        self.apply_ops([indexops.record_instance(meta, full=full)], pipe)

    def apply_ops(self, ops: list[indexops.Op], pipe: "redis.client.Pipeline | None" = None) -> None:
        """Index ops (``dicomlab.indexops``) in the caller's pipeline, or in one round trip now."""
        p = pipe if pipe is not None else self.client.pipeline(transaction=False)
        for op in ops:
            indexops.apply(p, op)
        if pipe is None:
            with _registry_errors():
                p.execute()

    def list_studies(self, limit: int = 100) -> list[dict[str, Any]]:
        with _registry_errors():
            uids = self.client.zrevrange(keys.STUDIES, 0, limit - 1)
            pipe = self.client.pipeline(transaction=False)
            for u in uids:
                pipe.hgetall(keys.study(u))
                pipe.scard(keys.study_instances(u))
                pipe.hlen(keys.study_series(u))
            raws = pipe.execute()
        out = []
        for i in range(0, len(raws), 3):
            raw, instances, series = raws[i:i + 3]
            if raw:
                out.append(self._study_summary({**raw, "instances": instances, "series": series}))
        return out

    def get_study(self, uid: str) -> dict[str, Any]:
        with _registry_errors():
            raw = self.client.hgetall(keys.study(uid))
            if not raw:
                raise NotFound(f"No study with the Study Instance UID {uid!r} was received.")
            series_raw = self.client.hgetall(keys.study_series(uid))
            pipe = self.client.pipeline(transaction=False)
            pipe.scard(keys.study_instances(uid))
            for series_uid in series_raw:
                pipe.scard(keys.series_instances(uid, series_uid))
            counts = pipe.execute()
        out = self._study_summary({**raw, "instances": str(counts[0]), "series": str(len(series_raw))})
        series = []
        for v, n in zip(series_raw.values(), counts[1:], strict=True):
            s = json.loads(v)
            s["instance_count"] = n
            series.append(s)
        out["series_list"] = sorted(series, key=lambda s: (str(s.get("series_number", "")), s["series_uid"]))
        return out

    @staticmethod
    def _study_summary(raw: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = dict(raw)
        out["instances"] = int(raw.get("instances", 0))
        out["series"] = int(raw.get("series", 0))
        out["last_received"] = float(raw.get("last_received", 0))
        return out

    # -- simulator jobs ---------------------------------------------------------
    def enqueue_job(self, request: dict[str, Any]) -> str:
        job_id = uuid.uuid4().hex[:12]
        with _registry_errors():
            pipe = self.client.pipeline()
            pipe.hset(
                keys.sim_job(job_id),
                mapping={"id": job_id, "state": "queued", "request": json.dumps(request), "created": f"{time.time():.3f}"},
            )
            pipe.expire(keys.sim_job(job_id), 7 * 24 * 3600)
            pipe.rpush(keys.SIM_JOBS, job_id)
            pipe.execute()
        return job_id

    def pop_job(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]] | None:
        with _registry_errors():
            res = self.client.blpop([keys.SIM_JOBS], timeout=timeout)
            if not res:
                return None
            job_id = res[1]
            raw = self.client.hget(keys.sim_job(job_id), "request")
        return job_id, json.loads(raw or "{}")

    def update_job(self, job_id: str, **fields_: Any) -> None:
        data = {k: _field(v) for k, v in fields_.items()}
        with _registry_errors():
            self.client.hset(keys.sim_job(job_id), mapping=data)

    def get_job(self, job_id: str) -> dict[str, Any]:
        with _registry_errors():
            raw = self.client.hgetall(keys.sim_job(job_id))
        if not raw:
            raise NotFound(f"No simulator job {job_id!r}.")
        out: dict[str, Any] = dict(raw)
        for k in ("request", "result"):
            if k in out:
                try:
                    out[k] = json.loads(out[k])
                except ValueError:
                    pass
        return out


# -- node status, shown as the lesson shows it: "USPROD (192.168.1.10 : 104) CONNECTED"
# (state: CONNECTED, REJECTED, UNREACHABLE or NEVER SEEN)
def node_state(status: dict[str, str]) -> tuple[str, str]:
    """(state, why) from a node's status hash; the most recent fact decides.

    Status fields (written by the PACS and the admin API through
    ``Registry.set_node_status``): ``last_association`` (accepted|rejected),
    ``last_association_time``, ``last_rejected_reason``; ``last_echo_ok``
    (1|0), ``last_echo_time``, ``last_echo_error``, ``last_echo_ms``.
    Times are Unix seconds as text.
    """
    assoc_t = float(status.get("last_association_time") or 0)
    echo_t = float(status.get("last_echo_time") or 0)
    if not assoc_t and not echo_t:
        return "NEVER SEEN", "no association and no echo yet"
    if assoc_t >= echo_t:
        if status.get("last_association") == "accepted":
            return "CONNECTED", "last association accepted"
        return "REJECTED", status.get("last_rejected_reason") or "last association rejected"
    if status.get("last_echo_ok") == "1":
        return "CONNECTED", f"last echo answered in {status.get('last_echo_ms', '?')} ms"
    return "UNREACHABLE", status.get("last_echo_error") or "last echo failed"
