"""Run scenarios against a running lab: set up through the admin API, run the
modality for real, restore the lab, and compare observed with expected.

Per scenario:

1. snapshot what it touches (listener settings, the nodes with its AE titles);
2. set up: nodes, listener settings (waiting until the PACS listens on a new
   port), a network namespace, held associations, a paused registry;
3. the modality sends (in this process, or inside the namespace);
4. restore, always -- registry first, then associations, namespace, settings, nodes;
5. a *marker*: a C-ECHO from an unregistered AE title, whose rejection event
   proves the PACS has recorded everything before it (so "no event" is observed,
   not assumed);
6. read the PACS events of the scenario from the admin API and compare.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dicomlab.ports import free_port
from dicomlab.waiting import poll_until, wait_until

from . import commitprobe, probe, qrprobe
from . import netns as netns_mod
from .adminapi import SCP_WRITABLE, AdminApi, ApiError
from .catalogue import EventExpectation, Scenario
from .registryctl import RegistryControl

PROBE_AET = "LABPROBE"
MARKER_AET = "LABMARKER"
DEFAULT_AET = "LABCT01"
OTHER_AET = "LABOTHER"  # the other node whose certificate a modality presents (wrong-client-identity)
# Event types that mean "the PACS saw this modality"
SEEN_TYPES = ("association-", "context-", "store-", "echo-received")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class Result:
    scenario: Scenario
    status: str = "pass"  # pass | fail | skip | error
    observed_modality: str = ""
    observed_pacs: str = ""
    mismatches: list[str] = field(default_factory=list)
    reason: str = ""  # skip / error reason
    elapsed: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "pass" or (self.status == "skip" and not IN_CI)


class PacsLog:
    """The PACS's stdout event lines: a file (local runtime, tests) or ``compose logs pacs``."""

    TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) +[A-Z]+ +(\S+)")

    def __init__(self, path: str | None = None, cmd: list[str] | None = None) -> None:
        self.path, self.cmd = path, cmd

    def describe(self) -> str:
        return self.path or " ".join(self.cmd or []) or "none"

    def text(self) -> str:
        if self.path:
            try:
                with open(self.path, errors="replace") as fh:
                    return fh.read()
            except OSError:
                return ""
        if self.cmd:
            r = subprocess.run(self.cmd, capture_output=True, text=True, timeout=60)
            return r.stdout
        return ""

    def lines(self, after: str) -> list[tuple[str, str]]:
        """(event type, line) of the PACS's event lines at or after the UTC time ``after``."""
        out = []
        for line in self.text().splitlines():
            m = self.TIME.search(line)
            if m and m.group(2) == "pacs" and m.group(1) >= after:
                out.append((m.group(3), line))
        return out


@dataclass
class LabContext:
    api: AdminApi
    pacs_host: str
    pacs_port: int  # where the modality reaches the PACS from this host
    direct_port: bool  # pacs_port is the listener's own port (not a published mapping)
    calling: str = DEFAULT_AET
    peer: str = ""  # the address the PACS sees this host's modality come from
    registry: RegistryControl = field(default_factory=RegistryControl)
    netns_reason: str | None = None  # why namespaces cannot be used, or None
    # The Compose runtime's "modality elsewhere": makes a second simulator container (container.py)
    # where the local runtime makes a network namespace; None: network namespaces.
    elsewhere: Any = None
    drop_reason: str | None = None  # why the "elsewhere" cannot drop packets, or None
    event_timeout: float = 10.0
    pacs_log: PacsLog | None = None  # the PACS's stdout, for events it could not store
    pacs_tls_port: int | None = None  # where the modality reaches the PACS's DICOM TLS port from this host
    tls_dir: str | None = None  # the lab CA's folder (ca.pem, ca.key): signs what the admin API will not
    tls_reason: str | None = None  # why TLS scenarios cannot run here, or None
    workdir: str = ""  # a private folder for the TLS files of the scenarios


class Skip(Exception):
    pass


class Runner:
    def __init__(self, ctx: LabContext, log: Any = None) -> None:
        self.ctx = ctx
        self.log = log or (lambda msg: None)

    # -- preparation -----------------------------------------------------------------
    def calibrate(self) -> None:
        """Find the address the PACS sees us at: a probe association, and its rejection event."""
        api = self.ctx.api
        for title in (PROBE_AET, MARKER_AET):
            if api.node(title) is not None:
                raise RuntimeError(f"a node {title!r} is registered: the runner uses that AE title as an "
                                   "unregistered probe; remove the node first")
        since = api.last_event_id()
        scp = api.scp()
        obs = probe.run({"kind": "echo", "host": self.ctx.pacs_host, "port": self.ctx.pacs_port,
                         "calling_aet": PROBE_AET, "called_aet": scp["ae_title"], "timeout": 10})
        if obs["kind"] != "rejected":
            raise RuntimeError(f"the PACS at {self.ctx.pacs_host}:{self.ctx.pacs_port} did not reject an "
                               f"unregistered probe as it should: {probe.describe(obs)}")
        ev = self._wait_for(since, lambda e: e["type"] == "association-rejected" and e["calling_aet"] == PROBE_AET)
        if ev is None:
            raise RuntimeError("the PACS's rejection of the probe never reached the event stream "
                               "(is the admin API on the same registry as the PACS?)")
        self.ctx.peer = ev["peer"]

    def _wait_for(self, since: str, pred: Any, timeout: float | None = None) -> dict[str, Any] | None:
        return poll_until(lambda: next((e for e in self.ctx.api.events_since(since) if pred(e)), None),
                          timeout or self.ctx.event_timeout, interval=0.1)

    def _marker(self) -> bool:
        """A rejected C-ECHO whose event closes the scenario's window of events."""
        api = self.ctx.api
        since = api.last_event_id()
        scp = api.scp()
        probe.run({"kind": "echo", "host": self.ctx.pacs_host, "port": self.ctx.pacs_port,
                   "calling_aet": MARKER_AET, "called_aet": scp["ae_title"], "timeout": 10})
        return self._wait_for(since, lambda e: e.get("calling_aet") == MARKER_AET
                              and e["type"] == "association-rejected") is not None

    def _wait_listening(self, port: int, old: int | None = None, timeout: float = 15.0,
                        elsewhere: Any = None) -> str | None:
        """Wait until the PACS reports listening on ``port``, then until ``old`` (on this host) refuses
        connections: with several PACS worker processes the others follow the first within their poll
        interval (DESIGN: within 2 s). Returns a mismatch sentence when ``old`` keeps accepting.
        ``elsewhere``: look from there (a container on the lab network) instead of this host."""
        wait_until(lambda: ((self.ctx.api.scp().get("listener") or {}).get("heartbeat") or {}).get("port") == port,
                   timeout, interval=0.1, what=f"the PACS to report listening on port {port}", error=RuntimeError)
        if old is None or not (self.ctx.direct_port or elsewhere is not None):
            return None
        moved = time.monotonic()
        while True:
            if elsewhere is not None:
                if elsewhere.can_reach(elsewhere.host_ip, old, timeout=1) is not None:
                    return None
            else:
                try:
                    with socket.create_connection((self.ctx.pacs_host, old), timeout=1):
                        pass
                except OSError:
                    return None
            if time.monotonic() - moved > 5.0:
                return (f"the PACS still accepts connections on its old port {old} 5 s after reporting it "
                        f"listens on {port} (DESIGN: a port change re-binds within 2 s)")
            time.sleep(0.05)

    # -- one scenario --------------------------------------------------------------------
    def subst(self, value: Any, extra: dict[str, str]) -> Any:
        if isinstance(value, str):
            for k, v in extra.items():
                value = value.replace("{" + k + "}", v)
            return value
        if isinstance(value, list):
            return [self.subst(v, extra) for v in value]
        if isinstance(value, dict):
            return {k: self.subst(v, extra) for k, v in value.items()}
        return value

    def run(self, sc: Scenario) -> Result:
        started = time.monotonic()
        res = Result(sc)
        try:
            self._run(sc, res)
        except Skip as exc:
            res.status, res.reason = "skip", str(exc)
        except Exception as exc:  # a broken lab or runner: say so, carry on with the next scenario
            res.status, res.reason = "error", f"{type(exc).__name__}: {exc}"
            self.log(traceback.format_exc())
        res.elapsed = time.monotonic() - started
        if res.status == "skip" and IN_CI:
            res.reason = f"CI must not skip: {res.reason}"
        return res

    def _run(self, sc: Scenario, res: Result) -> None:
        ctx, api = self.ctx, self.ctx.api
        setup = sc.setup
        if sc.needs_netns and ctx.elsewhere is None and ctx.netns_reason:
            raise Skip(ctx.netns_reason)
        if sc.needs_netns and ctx.elsewhere is not None and setup.get("drop") and ctx.drop_reason:
            raise Skip(ctx.drop_reason)
        if sc.needs_registry_control and not ctx.registry.available:
            raise Skip(f"cannot pause the registry: {ctx.registry.why_not}")
        if sc.needs_tls and ctx.tls_reason:
            raise Skip(ctx.tls_reason)
        if sc.needs_tls and sc.action.get("tls", {}).get("outdated"):
            from ..tls import outdated_unavailable

            why = outdated_unavailable()
            if why:
                raise Skip(f"unavailable: {why}")
        if sc.needs_pacs_log and ctx.pacs_log is None:
            raise Skip("the PACS cannot store events while its registry is down, and no PACS log to read them "
                       "from (give --pacs-log FILE)")
        started_utc = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        scp_before = api.scp()
        port_move = "port" in (setup.get("scp") or {}) and not ctx.direct_port
        if port_move and ctx.elsewhere is None:
            raise Skip("the modality reaches the PACS through a published port mapping, so a listener port "
                       "change is not visible from here (run inside the lab network, or give --pacs-port "
                       "equal to the listener port)")
        # The modality elsewhere (a network namespace, or in Compose a second simulator container), made
        # first: its address goes into the node and the expectations.
        # A listener port move behind a published port mapping is seen from inside the lab network.
        ns = (ctx.elsewhere() if ctx.elsewhere is not None else netns_mod.Netns()) \
            if sc.needs_netns or port_move else None
        if ns is not None:
            ns.create()
        try:
            return self._run_with(sc, res, scp_before, started_utc, ns)
        finally:
            if ns is not None:
                ns.delete()  # also in the restore steps; here for a failure before them

    def _run_with(self, sc: Scenario, res: Result, scp_before: dict[str, Any], started_utc: str, ns: Any) -> None:
        ctx, api = self.ctx, self.ctx.api
        setup, action = sc.setup, dict(sc.action)
        values = {"calling": ctx.calling, "calling_lower": ctx.calling.lower(), "pacs_aet": scp_before["ae_title"],
                  "peer": ctx.peer, "netns_peer": ns.ns_ip if ns else "",
                  "listen_port": str(free_port()), "closed_port": str(free_port())}  # storage commitment
        node = self.subst(setup.get("node"), values)
        if node and isinstance(node.get("port"), str):
            node["port"] = int(node["port"])
        refused = self.subst(setup.get("refused_nodes") or [], values)
        action = self.subst(action, values)
        expectations = [EventExpectation(**self.subst(dict(e.__dict__), values)) for e in sc.pacs]
        calling = action.get("calling_aet", ctx.calling)
        wire_calling = calling[:16]
        titles = {ctx.calling, wire_calling, *(n["ae_title"] for n in refused)}
        if node:
            titles.add(node["ae_title"])
        tls = action.get("tls")
        if tls is not None and tls.get("cert") == "other-node":
            titles.add(OTHER_AET)
        destination = self.subst(setup.get("destination"), values)  # a C-MOVE destination (qrprobe.py)
        if destination:
            titles.add(destination["ae_title"])
        dest_scp = None  # the move destination's storage SCP, when the scenario has one
        nodes_before = {t: api.node(t) for t in sorted(titles) if len(t) <= 16}
        since = api.last_event_id()
        scp_changes = dict(setup.get("scp") or {})
        if scp_changes.get("port") == "free":
            scp_changes["port"] = free_port()
        held: list[Any] = []
        target_host, target_port = ctx.pacs_host, ctx.pacs_port
        observed: dict[str, Any] = {}
        notes: list[str] = []
        try:
            # -- set up -------------------------------------------------------------
            for t in nodes_before:
                if nodes_before[t] is not None:
                    api.delete_node(t)
            for n in refused:
                try:
                    api.call("POST", "/api/nodes", {"ae_title": n["ae_title"], "host": n["host"]})
                    notes.append(f"admin API ACCEPTED node {n['ae_title']!r}")
                    res.mismatches.append(f"the admin API registered {n['ae_title']!r}; it must refuse it")
                except ApiError as exc:
                    notes.append(f"admin API refused {n['ae_title']!r}: HTTP {exc.status}")
                    if exc.status not in (400, 422):
                        res.mismatches.append(f"registering {n['ae_title']!r}: HTTP {exc.status}, expected 422")
            if node:
                api.put_node({"port": 104, **node})
            if tls is not None and tls.get("cert") == "other-node":
                api.put_node({"ae_title": OTHER_AET, "host": ctx.peer, "port": 104, "tls": "allowed"})
            if destination:
                dest_port = destination.get("port", "listener")
                if dest_port == "listener":
                    dest_scp = qrprobe.Destination(destination["ae_title"], destination.get("accept_calling"))
                    dest_port = dest_scp.port
                elif dest_port == "closed":
                    dest_port = free_port()
                api.put_node({"ae_title": destination["ae_title"], "host": destination.get("host", ctx.peer),
                              "port": dest_port, "services": ["C-ECHO"]})
            if scp_changes:
                api.patch_scp(scp_changes)
                if "port" in scp_changes:
                    late = self._wait_listening(scp_changes["port"], old=int(scp_before["port"]),
                                                elsewhere=ns if getattr(ns, "inside_lab", False) else None)
                    if late:
                        res.mismatches.append(late)
            port = action.get("port", "tls" if tls is not None else None)
            if port == "tls":
                target_port = self._tls_port(scp_changes)
            elif port == "plain":
                target_port = ctx.pacs_port
            elif port == "closed":
                target_port = free_port()
            elif port == "previous":
                target_port = ctx.pacs_port
            elif scp_changes.get("port"):
                target_port = scp_changes["port"]
            elif isinstance(port, int):
                target_port = port
            if ns is not None and getattr(ns, "inside_lab", False):
                # a container on the lab network: the PACS by its service name, at the listener's own ports
                listener = int(scp_before["port"])
                target_host = ns.host_ip
                target_port = {"closed": target_port, "previous": listener}.get(port, scp_changes.get("port", listener))
            elif ns is not None:
                target_host, target_port = ns.target(target_port)
            if ns is not None and sc.needs_netns:
                why = ns.can_reach(target_host, target_port)
                if why:
                    raise Skip(f"the PACS is not reachable from the {ns.describe()} at {target_host}:{target_port} "
                               f"({why}); it must listen on 0.0.0.0 (PACS_BIND / --bind), not only on 127.0.0.1")
                if setup.get("drop"):
                    ns.drop(setup["drop"], target_port)
            for _ in range(int(setup.get("hold", 0))):
                held.append(self._hold(calling, scp_before["ae_title"]))
            spec = {"kind": action.get("kind", "send"), "host": target_host, "port": target_port,
                    "calling_aet": calling, "called_aet": action.get("called_aet", scp_before["ae_title"]),
                    **{k: v for k, v in action.items() if k not in ("kind", "port", "calling_aet", "called_aet",
                                                                    "tls")}}
            if tls is not None:
                spec["tls"] = self.tls_spec(tls, calling)
                how = "certificate issued by the admin API" if spec["tls"].get("request_from") else \
                    "certificate signed with the lab CA's folder" if spec["tls"].get("lab_ca_dir") else "no certificate"
                notes.append(f"TLS: {tls}, {how}")
            # -- the modality sends ----------------------------------------------------
            if sc.needs_registry_control:
                ctx.registry.pause()
            if ns is not None:
                r = ns.probe(spec)
                try:
                    observed = json.loads(r.stdout.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    raise RuntimeError(f"the modality in the {ns.describe()} printed no result: "
                                       f"{r.stderr[-500:]}") from None
            else:
                observed = probe.run(spec)
            if sc.needs_registry_control:
                self._registry_down_noticed(started_utc)
        finally:
            # -- restore, always --------------------------------------------------------
            errors = []
            for step in (ctx.registry.resume,
                         lambda: api.wait_healthy(30) or errors.append("the admin API is not healthy after setup"),
                         lambda: [h.release() for h in held if h.is_established],
                         dest_scp.stop if dest_scp is not None else (lambda: None),
                         ns.delete if ns is not None else (lambda: None),
                         lambda: self._restore_scp(scp_before),
                         lambda: self._restore_nodes(nodes_before, titles)):
                try:
                    step()
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
            if errors:
                raise RuntimeError("restoring the lab failed: " + "; ".join(errors))
        # -- observe the PACS side, and compare -----------------------------------------
        marker = self._marker()
        res.raw = {"modality": observed, "spec": spec}
        res.observed_modality = probe.describe(observed)
        if notes:
            res.observed_modality += " [" + "; ".join(notes) + "]"
        res.mismatches += compare_modality(sc.modality, observed)
        pacs_obs, pacs_miss = self._observe_pacs(sc, expectations, since, wire_calling, ns.ns_ip if ns else "",
                                                 started_utc)
        res.observed_pacs = pacs_obs
        res.mismatches += pacs_miss
        if not marker:
            res.mismatches.append("the marker C-ECHO's rejection never reached the event stream")
        res.status = "fail" if res.mismatches else "pass"

    # -- DICOM TLS ---------------------------------------------------------------------------
    def _tls_port(self, scp_changes: dict[str, Any]) -> int:
        if "tls_port" in scp_changes:
            return int(scp_changes["tls_port"])
        if self.ctx.pacs_tls_port is None:
            raise Skip("the PACS's DICOM TLS port is not known here (give --pacs-tls-port)")
        return self.ctx.pacs_tls_port

    def _lab_ca_file(self) -> str:
        """The lab CA certificate: from the admin API, else from the lab CA's folder."""
        path = os.path.join(self.ctx.workdir, "lab-ca.pem")
        try:
            pem = self.ctx.api.lab_ca()
        except ApiError as exc:
            if self.ctx.tls_dir and os.path.isfile(os.path.join(self.ctx.tls_dir, "ca.pem")):
                return os.path.join(self.ctx.tls_dir, "ca.pem")
            raise Skip(f"no lab CA certificate: the admin API gave none ({exc}) and no lab CA folder "
                       "(--tls-lab-ca)") from exc
        with open(path, "wb") as fh:
            fh.write(pem)
        return path

    def _can_issue(self) -> bool:
        """The admin API issues node certificates (else the runner signs with the lab CA's folder)."""
        return self.ctx.api.can_issue_certificates()

    def _need_ca_dir(self, what: str) -> str:
        d = self.ctx.tls_dir
        if not d or not os.path.isfile(os.path.join(d, "ca.key")):
            raise Skip(f"{what} is signed with the lab CA's key, which is not readable here (give --tls-lab-ca "
                       "DIR, the PACS's TLS folder)")
        return d

    def tls_spec(self, tls: dict[str, Any], calling: str) -> dict[str, Any]:
        """The catalogue's action.tls as a ``ct_simulator.tls.TlsSpec`` (its ``from_dict`` form)."""
        api = self.ctx.api
        d: dict[str, Any] = {"ca_file": self._lab_ca_file()}
        if tls.get("server_name"):
            d["server_name"] = tls["server_name"]
        if tls.get("outdated"):
            d["outdated"] = True
        if tls.get("ca") == "other":
            d["trust_other_ca"] = True
        cert = tls.get("cert", "issued")
        if cert == "none":
            d["no_cert"] = True
        elif cert == "expired":
            d["expired_cert"] = True
            d["lab_ca_dir"] = self._need_ca_dir("an expired certificate of the lab CA")
        else:
            who = OTHER_AET if cert == "other-node" else calling
            if self._can_issue():
                d["request_from"] = [api.url, api.token]
                if who != calling:
                    d["cert_of"] = who
            else:
                d["cert_of"] = who
                d["lab_ca_dir"] = self._need_ca_dir(f"the certificate of {who}")
        return d

    def _registry_down_noticed(self, after: str, timeout: float = 15.0) -> bool:
        """Keep the registry down until the PACS itself has said so (its own stdout line), as a real
        outage would: a pause shorter than the PACS's look at its registry ends before it notices."""
        if self.ctx.pacs_log is None:
            return False
        log = self.ctx.pacs_log
        return bool(poll_until(lambda: any(type_.rstrip(":") == "settings-changed" and "(Redis) is unreachable" in line
                                           for type_, line in log.lines(after)), timeout, interval=0.2))

    def _hold(self, calling: str, called: str) -> Any:
        from pynetdicom.presentation import build_context

        from ..network import Link, associate

        link = Link(host=self.ctx.pacs_host, port=self.ctx.pacs_port, calling_aet=calling, called_aet=called,
                    connect_timeout=5, acse_timeout=5)
        assoc, problem = associate(link, [build_context("1.2.840.10008.1.1")])
        if assoc is None:
            raise RuntimeError(f"could not open the association to hold: {problem.text() if problem else '?'}")
        return assoc

    def _restore_scp(self, before: dict[str, Any]) -> None:
        now = self.ctx.api.scp()
        changes = {k: before[k] for k in SCP_WRITABLE if k in before and now.get(k) != before[k]}
        if changes:
            self.ctx.api.patch_scp(changes)
        if "port" in changes:
            self._wait_listening(before["port"])

    def _restore_nodes(self, before: dict[str, dict[str, Any] | None], titles: set[str]) -> None:
        api = self.ctx.api
        for t in sorted(titles):
            if len(t) > 16:
                continue
            was = before.get(t)
            if was is None:
                api.delete_node(t)
            else:
                api.put_node(was)

    # -- the PACS side ------------------------------------------------------------------------
    def _observe_pacs(self, sc: Scenario, expectations: list[EventExpectation], since: str, calling: str,
                      ns_peer: str, started_utc: str) -> tuple[str, list[str]]:
        deadline = time.monotonic() + self.ctx.event_timeout
        while True:
            events = self.ctx.api.events_since(since)
            log = self.ctx.pacs_log.lines(started_utc) if sc.needs_pacs_log and self.ctx.pacs_log else []
            found = [_matching_lines(log, e, calling) if e.where == "log"
                     else _matching(events, e, calling, ns_peer or self.ctx.peer) for e in expectations]
            done = all(len(f) >= (e.count or 1) for f, e in zip(found, expectations, strict=True))
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        misses = []
        parts = []
        for exp, got in zip(expectations, found, strict=True):
            n = len(got)
            if exp.count is None and n == 0 or exp.count is not None and n != exp.count:
                misses.append(f"PACS: expected {exp.describe()}, found {n}")
            parts.append(f"{exp.describe().split(' x')[0]} x{n}")
        if sc.pacs_silent:
            seen = [e for e in events if e["type"].startswith(SEEN_TYPES)
                    and (e.get("calling_aet") == calling or (ns_peer and e.get("peer") == ns_peer))]
            if seen:
                misses.append(f"PACS: expected no event from this modality, found {len(seen)}")
                parts.append("; ".join(f"{e['type']}/{e.get('reason', '')}" for e in seen[:3]))
            else:
                parts.append("no event from this modality")
        return ", ".join(parts), misses


def _host(peer: str) -> str:
    """The address of 'host:port', '[v6]:port' or a bare address."""
    if peer.startswith("["):
        return peer[1:].split("]", 1)[0]
    return peer.rsplit(":", 1)[0] if peer.count(":") == 1 else peer


def _matching(events: list[dict[str, Any]], exp: EventExpectation, calling: str,
              peer: str = "") -> list[dict[str, Any]]:
    out = []
    who = exp.calling_aet or calling
    for e in events:
        if e["type"] != exp.type:
            continue
        if exp.who == "modality" and e.get("calling_aet", "") != who:
            continue
        if exp.who == "peer" and _host(e.get("peer", "")) != _host(peer):
            continue
        if exp.cause is not None and (e.get("detail") or {}).get("cause") != exp.cause:
            continue
        if exp.reason is not None and e.get("reason", "") != exp.reason:
            continue
        if exp.outcome is not None and e.get("outcome", "") != exp.outcome:
            continue
        if exp.message is not None and exp.message not in e.get("message", ""):
            continue
        out.append(e)
    return out


def _matching_lines(lines: list[tuple[str, str]], exp: EventExpectation, calling: str) -> list[str]:
    who = exp.calling_aet or calling
    return [line for type_, line in lines if type_ == exp.type
            and (exp.who == "any" or f" {who}@" in line)
            and (exp.message is None or exp.message in line)
            and (exp.outcome is None or exp.outcome in line)]


def compare_modality(expected: dict[str, Any], obs: dict[str, Any]) -> list[str]:
    out = []
    kind = obs.get("kind")
    kinds = expected["kind"] if isinstance(expected["kind"], list) else [expected["kind"]]
    if kind not in kinds:
        out.append(f"modality: expected {' or '.join(kinds)}, observed {kind}")
    if "codes" in expected and obs.get("codes") != expected["codes"]:
        out.append(f"modality: expected A-ASSOCIATE-RJ {expected['codes']}, observed {obs.get('codes') or 'none'}")
    if "status" in expected and expected["status"] not in obs.get("statuses", []):
        seen = ",".join(f"0x{s:04X}" for s in obs.get("statuses", [])) or "none"
        out.append(f"modality: expected status 0x{expected['status']:04X}, observed {seen}")
    if "tls" in expected and kind == "tls-failed" and obs.get("tls") != expected["tls"]:
        out.append(f"modality: expected the TLS failure {expected['tls']}, observed {obs.get('tls') or 'none'}")
    if "sent" in expected and obs.get("sent") != expected["sent"]:
        out.append(f"modality: expected {expected['sent']} acknowledged, observed {obs.get('sent')}")
    if "context_result" in expected and expected["context_result"] not in obs.get("context_results", []):
        out.append(f"modality: expected context result {expected['context_result']}, "
                   f"observed {obs.get('context_results')}")
    if "min_elapsed_s" in expected and obs.get("elapsed_s", 0) < expected["min_elapsed_s"]:
        out.append(f"modality: expected at least {expected['min_elapsed_s']:g} s, observed {obs.get('elapsed_s', 0):.2f} s")
    return out + commitprobe.compare(expected, obs)
