"""Bring a registry written before AE titles were encoded in key names to schema 2.

Before schema 2 a node's keys were ``dicomlab:node:<AE>`` and ``dicomlab:node:<AE>:status``
with the AE title as it is, so a node called ``CT01:status`` wrote its fields into CT01's
status hash (and could not be deleted afterwards). ``migrate`` moves the keys of every
registered title that encodes differently (``keys.encode_ae``) to the encoded names:

- the node's own fields (those of ``settings.Node``, with ``ae_title`` equal to the title)
  go from ``node:<raw>`` to ``node:<encoded>``; fields of other kinds stay where they are
  (in the collision above, CT01's status fields stay in CT01's status hash);
- status fields (every field that is not a node field) go from ``node:<raw>:status`` to
  ``node:<encoded>:status``.

Titles with ``%`` are moved first: their old key names can be the new names of other titles.
When done, ``dicomlab:schema`` says ``2``, so the next start does nothing (idempotent); the
lock ``dicomlab:schema:lock`` keeps two admin API processes from migrating at once. Until it
has run, the PACS does not find a node whose title needed encoding (it rejects it, and says so).
The admin API runs it when it starts (its Redis user manages the nodes).
"""

from __future__ import annotations

from dataclasses import fields

import redis

from . import keys
from .settings import Node

NODE_FIELDS = frozenset(f.name for f in fields(Node))


def migrate(client: redis.Redis) -> list[str]:
    """Move old-format node keys; returns one line per key moved (empty when there was nothing)."""
    if client.get(keys.SCHEMA) == keys.SCHEMA_VERSION:
        return []
    # One migrator at a time (gunicorn starts several admin API processes at once); the others
    # leave it to the one holding the lock.
    if not client.set(keys.SCHEMA_LOCK, "1", nx=True, ex=60):
        return []
    try:
        return _move(client)
    finally:
        client.delete(keys.SCHEMA_LOCK)


def _move(client: redis.Redis) -> list[str]:
    moved: list[str] = []
    titles = client.smembers(keys.NODES)
    for title in sorted(titles, key=lambda t: ("%" not in t, t)):
        if keys.encode_ae(title) == title:
            continue
        old_node = f"{keys.NODE_PREFIX}{title}"
        old_status = f"{old_node}:status"
        node_part = {k: v for k, v in client.hgetall(old_node).items() if k in NODE_FIELDS}
        status_part = {k: v for k, v in client.hgetall(old_status).items() if k not in NODE_FIELDS}
        pipe = client.pipeline()
        if node_part and node_part.get("ae_title") == title:
            pipe.hset(keys.node(title), mapping=node_part)
            pipe.hdel(old_node, *node_part)
            moved.append(f"{old_node} -> {keys.node(title)}")
        if status_part:
            pipe.hset(keys.node_status(title), mapping=status_part)
            pipe.hdel(old_status, *status_part)
            moved.append(f"{old_status} -> {keys.node_status(title)}")
        pipe.execute()
    client.set(keys.SCHEMA, keys.SCHEMA_VERSION)
    return moved
