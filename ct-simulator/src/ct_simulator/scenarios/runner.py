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
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dicomlab.ports import free_port

from . import netns as netns_mod
from . import probe, qrprobe
from .adminapi import SCP_WRITABLE, ApiError
from .catalogue import EventExpectation, Scenario
from .compare import compare_modality, observe_pacs
from .context import DEFAULT_AET, IN_CI, LabContext, PacsLog, Result, Skip
from .tlsprep import OTHER_AET, tls_port, tls_spec
from .watch import LabWatch

__all__ = ["DEFAULT_AET", "IN_CI", "LabContext", "PacsLog", "Result", "Runner", "Skip"]


@dataclass
class Attempt:
    """One scenario's run between its steps: the catalogue's entry with this lab's values put in, what the
    set-up changed (to restore), and what the modality was told and observed."""

    scp_before: dict[str, Any]
    started_utc: str
    ns: Any  # the modality elsewhere, or None
    node: dict[str, Any] | None
    refused: list[dict[str, Any]]
    action: dict[str, Any]
    expectations: list[EventExpectation]
    calling: str
    wire_calling: str  # the calling AE title as it goes on the wire (16 characters at most)
    titles: set[str]  # every AE title whose node the scenario touches
    tls: dict[str, Any] | None
    destination: dict[str, Any] | None
    nodes_before: dict[str, dict[str, Any] | None]
    since: str  # the last event before the scenario
    scp_changes: dict[str, Any]
    target_host: str
    target_port: int
    dest_scp: Any = None  # the C-MOVE destination's storage SCP, when the scenario has one
    held: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)
    observed: dict[str, Any] = field(default_factory=dict)


class Runner(LabWatch):
    """Runs scenarios one by one: each set up, sent, restored and compared (the module docstring)."""

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
        at = self._prepare(sc, scp_before, started_utc, ns)
        try:
            self._set_up_nodes(at, res)
            self._set_up_listener(at, res)
            self._aim(sc, at)
            self._modality_spec(sc, at)
            self._send(sc, at)
        finally:
            self._restore(at)
        self._compare(sc, res, at)

    # -- the steps of one scenario ---------------------------------------------------------
    def _prepare(self, sc: Scenario, scp_before: dict[str, Any], started_utc: str, ns: Any) -> Attempt:
        """The scenario with this lab's values put in, the AE titles it touches and what they were."""
        ctx, api = self.ctx, self.ctx.api
        setup = sc.setup
        values = {"calling": ctx.calling, "calling_lower": ctx.calling.lower(), "pacs_aet": scp_before["ae_title"],
                  "peer": ctx.peer, "netns_peer": ns.ns_ip if ns else "",
                  "listen_port": str(free_port()), "closed_port": str(free_port())}  # storage commitment
        node = self.subst(setup.get("node"), values)
        if node and isinstance(node.get("port"), str):
            node["port"] = int(node["port"])
        refused = self.subst(setup.get("refused_nodes") or [], values)
        action = self.subst(dict(sc.action), values)
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
        nodes_before = {t: api.node(t) for t in sorted(titles) if len(t) <= 16}
        since = api.last_event_id()
        scp_changes = dict(setup.get("scp") or {})
        if scp_changes.get("port") == "free":
            scp_changes["port"] = free_port()
        return Attempt(scp_before=scp_before, started_utc=started_utc, ns=ns, node=node, refused=refused,
                       action=action, expectations=expectations, calling=calling, wire_calling=wire_calling,
                       titles=titles, tls=tls, destination=destination, nodes_before=nodes_before, since=since,
                       scp_changes=scp_changes, target_host=ctx.pacs_host, target_port=ctx.pacs_port)

    def _set_up_nodes(self, at: Attempt, res: Result) -> None:
        """The nodes: its AE titles removed, the refused ones tried, its own node, the other node, the
        C-MOVE destination (with a storage SCP of its own when it has one)."""
        ctx, api = self.ctx, self.ctx.api
        for t in at.nodes_before:
            if at.nodes_before[t] is not None:
                api.delete_node(t)
        for n in at.refused:
            try:
                api.call("POST", "/api/nodes", {"ae_title": n["ae_title"], "host": n["host"]})
                at.notes.append(f"admin API ACCEPTED node {n['ae_title']!r}")
                res.mismatches.append(f"the admin API registered {n['ae_title']!r}; it must refuse it")
            except ApiError as exc:
                at.notes.append(f"admin API refused {n['ae_title']!r}: HTTP {exc.status}")
                if exc.status not in (400, 422):
                    res.mismatches.append(f"registering {n['ae_title']!r}: HTTP {exc.status}, expected 422")
        if at.node:
            api.put_node({"port": 104, **at.node})
        if at.tls is not None and at.tls.get("cert") == "other-node":
            api.put_node({"ae_title": OTHER_AET, "host": ctx.peer, "port": 104, "tls": "allowed"})
        destination = at.destination
        if destination:
            dest_port = destination.get("port", "listener")
            if dest_port == "listener":
                at.dest_scp = qrprobe.Destination(destination["ae_title"], destination.get("accept_calling"))
                dest_port = at.dest_scp.port
            elif dest_port == "closed":
                dest_port = free_port()
            api.put_node({"ae_title": destination["ae_title"], "host": destination.get("host", ctx.peer),
                          "port": dest_port, "services": ["C-ECHO"]})

    def _set_up_listener(self, at: Attempt, res: Result) -> None:
        """The listener settings; a port change waits until the PACS listens there (and not on the old)."""
        if not at.scp_changes:
            return
        self.ctx.api.patch_scp(at.scp_changes)
        if "port" in at.scp_changes:
            ns = at.ns
            late = self._wait_listening(at.scp_changes["port"], old=int(at.scp_before["port"]),
                                        elsewhere=ns if getattr(ns, "inside_lab", False) else None)
            if late:
                res.mismatches.append(late)

    def _aim(self, sc: Scenario, at: Attempt) -> None:
        """Where the modality sends: which PACS port, seen from this host or from elsewhere; checks that
        elsewhere reaches it, and drops packets there when the scenario says so."""
        ctx, ns, scp_changes = self.ctx, at.ns, at.scp_changes
        port = at.action.get("port", "tls" if at.tls is not None else None)
        if port == "tls":
            at.target_port = tls_port(ctx, scp_changes)
        elif port == "plain":
            at.target_port = ctx.pacs_port
        elif port == "closed":
            at.target_port = free_port()
        elif port == "previous":
            at.target_port = ctx.pacs_port
        elif scp_changes.get("port"):
            at.target_port = scp_changes["port"]
        elif isinstance(port, int):
            at.target_port = port
        if ns is not None and getattr(ns, "inside_lab", False):
            # a container on the lab network: the PACS by its service name, at the listener's own ports
            listener = int(at.scp_before["port"])
            at.target_host = ns.host_ip
            at.target_port = {"closed": at.target_port, "previous": listener}.get(port, scp_changes.get("port",
                                                                                                      listener))
        elif ns is not None:
            at.target_host, at.target_port = ns.target(at.target_port)
        if ns is not None and sc.needs_netns:
            why = ns.can_reach(at.target_host, at.target_port)
            if why:
                raise Skip(f"the PACS is not reachable from the {ns.describe()} at {at.target_host}:"
                           f"{at.target_port} ({why}); it must listen on 0.0.0.0 (PACS_BIND / --bind), not only on "
                           "127.0.0.1")
            if sc.setup.get("drop"):
                ns.drop(sc.setup["drop"], at.target_port)

    def _modality_spec(self, sc: Scenario, at: Attempt) -> None:
        """The associations held open beforehand, and what the modality is told to do (probe.run's spec)."""
        action, tls = at.action, at.tls
        for _ in range(int(sc.setup.get("hold", 0))):
            at.held.append(self._hold(at.calling, at.scp_before["ae_title"]))
        at.spec = {"kind": action.get("kind", "send"), "host": at.target_host, "port": at.target_port,
                   "calling_aet": at.calling, "called_aet": action.get("called_aet", at.scp_before["ae_title"]),
                   **{k: v for k, v in action.items() if k not in ("kind", "port", "calling_aet", "called_aet",
                                                                   "tls")}}
        if tls is not None:
            at.spec["tls"] = tls_spec(self.ctx, tls, at.calling)
            how = "certificate issued by the admin API" if at.spec["tls"].get("request_from") else \
                "certificate signed with the lab CA's folder" if at.spec["tls"].get("lab_ca_dir") else "no certificate"
            at.notes.append(f"TLS: {tls}, {how}")

    def _send(self, sc: Scenario, at: Attempt) -> None:
        """The modality sends: here, or elsewhere (it prints its observation as JSON there)."""
        ns = at.ns
        if sc.needs_registry_control:
            self.ctx.registry.pause()
        if ns is not None:
            r = ns.probe(at.spec)
            try:
                at.observed = json.loads(r.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise RuntimeError(f"the modality in the {ns.describe()} printed no result: "
                                   f"{r.stderr[-500:]}") from None
        else:
            at.observed = probe.run(at.spec)
        if sc.needs_registry_control:
            self._registry_down_noticed(at.started_utc)

    def _restore(self, at: Attempt) -> None:
        """Restore, always: registry first, then associations, destination, namespace, settings, nodes."""
        ctx, api, ns = self.ctx, self.ctx.api, at.ns
        errors = []
        for step in (ctx.registry.resume,
                     lambda: api.wait_healthy(30) or errors.append("the admin API is not healthy after setup"),
                     lambda: [h.release() for h in at.held if h.is_established],
                     at.dest_scp.stop if at.dest_scp is not None else (lambda: None),
                     ns.delete if ns is not None else (lambda: None),
                     lambda: self._restore_scp(at.scp_before),
                     lambda: self._restore_nodes(at.nodes_before, at.titles)):
            try:
                step()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        if errors:
            raise RuntimeError("restoring the lab failed: " + "; ".join(errors))

    def _compare(self, sc: Scenario, res: Result, at: Attempt) -> None:
        """The marker closes the window of events; then observed against expected, both sides."""
        ns = at.ns
        marker = self._marker()
        res.raw = {"modality": at.observed, "spec": at.spec}
        res.observed_modality = probe.describe(at.observed)
        if at.notes:
            res.observed_modality += " [" + "; ".join(at.notes) + "]"
        res.mismatches += compare_modality(sc.modality, at.observed)
        pacs_obs, pacs_miss = observe_pacs(self.ctx, sc, at.expectations, at.since, at.wire_calling,
                                           ns.ns_ip if ns else "", at.started_utc)
        res.observed_pacs = pacs_obs
        res.mismatches += pacs_miss
        if not marker:
            res.mismatches.append("the marker C-ECHO's rejection never reached the event stream")
        res.status = "fail" if res.mismatches else "pass"

    # -- helpers of the steps ----------------------------------------------------------------
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
