"""The JSON API under ``/api`` (DESIGN.md, "Admin API"): routes only; the
registry does the work, ``schemas`` validates, ``errors`` shapes failures."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from apiflask import APIBlueprint
from flask import current_app, url_for

from dicomlab.aetitle import check_ae_title
from dicomlab.errors import NotFound, RegistryUnavailable, ValidationError
from dicomlab.events import (
    ECHO_SENT,
    NODE_ADDED,
    NODE_CHANGED,
    NODE_REMOVED,
    SETTINGS_CHANGED,
)
from dicomlab.registry import node_state
from dicomlab.settings import Node

from . import schemas as s
from .address import public_address
from .auth import auth
from .echo import TLS_KINDS, send_echo
from .resources import resources
from .stream import event_stream

bp = APIBlueprint("api", __name__, url_prefix="/api", tag="DICOM Lab")


def protected(*codes: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Bearer token required; the error responses the route can give are documented."""

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        f = bp.doc(responses=sorted({400, 401, 503, *codes}))(f)
        return bp.auth_required(auth)(f)

    return deco


# -- helpers --------------------------------------------------------------------
def _num(raw: str | None) -> float | None:
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def node_out(node: Node, status: dict[str, str] | None = None) -> dict[str, Any]:
    raw = resources().registry.get_node_status(node.ae_title) if status is None else status
    state, why = node_state(raw)
    echo_ok = raw.get("last_echo_ok")
    return {
        **node.to_dict(),
        "status": {
            "state": state,
            "why": why,
            "summary": f"{node.ae_title} ({node.host} : {node.port}) {state}",
            "last_association": raw.get("last_association"),
            "last_association_time": _num(raw.get("last_association_time")),
            "last_rejected_reason": raw.get("last_rejected_reason"),
            "last_assoc_id": raw.get("last_assoc_id") or None,
            "last_association_tls": raw.get("last_association_tls"),
            "last_echo_ok": None if echo_ok is None else echo_ok == "1",
            "last_echo_time": _num(raw.get("last_echo_time")),
            "last_echo_error": raw.get("last_echo_error") or None,
            "last_echo_ms": _num(raw.get("last_echo_ms")),
        },
    }


def path_title(ae_title: str) -> str:
    """The AE title in the URL; one that breaks the rules names no node (404)."""
    try:
        return check_ae_title(ae_title)
    except ValidationError:
        raise NotFound(f"No authorized node has the AE title {ae_title!r}.") from None


def describe_node(node: Node) -> str:
    services = " + ".join(node.services) or "no services"
    state = "" if node.enabled else ", disabled"
    return f"{node.ae_title} ({node.host} : {node.port}, {services}{state})"


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, list):
        return " + ".join(map(str, v)) if len(v) <= 3 else f"{len(v)} entries"
    if v is None or v == "":
        return "(none)"
    return str(v)


def describe_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [f"{k} {_show(before.get(k))} → {_show(v)}" for k, v in after.items() if before.get(k) != v]


# -- health -----------------------------------------------------------------------
@bp.get("/health")
@bp.output(s.HealthOut)
@bp.doc(summary="200 when the registry (Redis) answers, 503 otherwise", responses=[200, 503], security=[])
def health():
    if not resources().registry.ping():
        raise RegistryUnavailable("the registry (Redis) does not answer a ping")
    return {"ok": True, "redis": "up"}


# -- listener settings ----------------------------------------------------------------
def scp_out() -> dict[str, Any]:
    reg = resources().registry
    settings = reg.get_listener().to_dict()
    heartbeat = reg.get_heartbeat()
    live_port = int(heartbeat["port"]) if heartbeat and heartbeat.get("port") else settings["port"]
    settings["listener"] = {
        "host": current_app.config["PACS_HOST"],
        "running": heartbeat is not None,
        "tls_port": heartbeat.get("tls_port") if heartbeat else None,
        "heartbeat": heartbeat,
        "public": public_address(current_app.config, settings["ae_title"], live_port),
    }
    return settings


@bp.get("/scp")
@protected()
@bp.output(s.ScpOut)
@bp.doc(summary="The PACS listener settings")
def get_scp():
    return scp_out()


@bp.patch("/scp")
@protected(422)
@bp.input(s.ScpPatch, arg_name="changes")
@bp.output(s.ScpOut)
@bp.doc(summary="Change the listener settings (applied live; a port change re-binds within 2 s)")
def patch_scp(changes: dict[str, Any]):
    reg = resources().registry
    before, after = reg.update_listener(changes)
    diff = describe_changes(before.to_dict(), after.to_dict())
    if diff:
        resources().events.emit(
            SETTINGS_CHANGED,
            f"Listener settings changed: {'; '.join(diff)}. The PACS applies them on the next association.",
            called_aet=after.ae_title,
            outcome="changed",
            detail={"before": before.to_dict(), "after": after.to_dict()},
        )
    return scp_out()


# -- nodes ---------------------------------------------------------------------------------
@bp.get("/nodes")
@protected()
@bp.output(s.NodeOut(many=True))
@bp.doc(summary="The authorized nodes, with their status")
def list_nodes():
    return [node_out(n) for n in resources().registry.list_nodes()]


@bp.post("/nodes")
@protected(409, 422)
@bp.input(s.NodeIn, arg_name="data")
@bp.output(s.NodeOut, status_code=201)
@bp.doc(summary="Authorize a node (409 when the AE title exists)")
def add_node(data: dict[str, Any]):
    node = resources().registry.add_node(Node(**data))
    resources().events.emit(
        NODE_ADDED,
        f"Node {describe_node(node)} was authorized: the PACS accepts its associations from now on.",
        calling_aet=node.ae_title,
        peer=f"{node.host}:{node.port}",
        outcome="added",
        detail=node.to_dict(),
    )
    return node_out(node, {}), 201, {"Location": url_for("api.get_node", ae_title=node.ae_title)}


@bp.get("/nodes/<path:ae_title>")
@protected()
@bp.output(s.NodeOut)
@bp.doc(summary="One node (AE title URL-encoded)")
def get_node(ae_title: str):
    return node_out(resources().registry.get_node(path_title(ae_title)))


def _changed(before: Node, after: Node) -> Any:
    diff = describe_changes(before.to_dict(), after.to_dict())
    resources().events.emit(
        NODE_CHANGED,
        f"Node {before.ae_title} was changed: {'; '.join(diff) if diff else 'nothing changed'}.",
        calling_aet=after.ae_title,
        peer=f"{after.host}:{after.port}",
        outcome="changed",
        detail={"before": before.to_dict(), "after": after.to_dict()},
    )
    return node_out(after)


@bp.put("/nodes/<path:ae_title>")
@protected(409, 422)
@bp.input(s.NodeIn, arg_name="data")
@bp.output(s.NodeOut)
@bp.doc(summary="Replace a node (a new AE title renames it; 409 when taken)")
def put_node(ae_title: str, data: dict[str, Any]):
    reg = resources().registry
    before = reg.get_node(path_title(ae_title))
    after = reg.replace_node(before.ae_title, Node(**data))
    return _changed(before, after)


@bp.patch("/nodes/<path:ae_title>")
@protected(409, 422)
@bp.input(s.NodePatch(partial=True), arg_name="changes")
@bp.output(s.NodeOut)
@bp.doc(summary="Change some fields of a node")
def patch_node(ae_title: str, changes: dict[str, Any]):
    reg = resources().registry
    before = reg.get_node(path_title(ae_title))
    after = reg.patch_node(before.ae_title, changes)
    return _changed(before, after)


@bp.delete("/nodes/<path:ae_title>")
@protected()
@bp.output({}, status_code=204)
@bp.doc(summary="Remove a node: the PACS refuses it from the next association")
def delete_node(ae_title: str):
    node = resources().registry.delete_node(path_title(ae_title))
    resources().events.emit(
        NODE_REMOVED,
        f"Node {describe_node(node)} was removed: the PACS refuses its associations from now on.",
        calling_aet=node.ae_title,
        peer=f"{node.host}:{node.port}",
        outcome="removed",
        detail=node.to_dict(),
    )
    return "", 204


@bp.post("/nodes/<path:ae_title>/echo")
@protected()
@bp.output(s.EchoOut)
@bp.doc(summary="The PACS's AE title sends C-ECHO to the node's host and port")
def echo_node(ae_title: str):
    reg = resources().registry
    node = reg.get_node(path_title(ae_title))
    pacs_aet = reg.get_listener().ae_title
    res = send_echo(pacs_aet, node.ae_title, node.host, node.port, float(current_app.config["ECHO_TIMEOUT"]),
                    tls=node.tls, tls_folder=current_app.config.get("TLS_DIR"))
    reg.set_node_status(
        node.ae_title,
        last_echo_ok="1" if res.ok else "0",
        last_echo_time=f"{time.time():.3f}",
        last_echo_error=res.error or "",
        last_echo_ms=f"{res.elapsed_ms:.1f}",
    )
    if res.ok:
        sentence = (f"C-ECHO from {pacs_aet} to {node.ae_title} at {node.host} : {node.port}"
                    + (f" over DICOM TLS ({res.tls})" if res.tls else "") + f" answered Success in "
                    f"{res.elapsed_ms:.0f} ms.")
    else:
        sentence = f"C-ECHO from {pacs_aet} to {node.ae_title} at {node.host} : {node.port} failed: {res.error}."
    resources().events.emit(
        ECHO_SENT,
        sentence,
        level="info" if res.ok else "warning",
        calling_aet=pacs_aet,
        called_aet=node.ae_title,
        peer=f"{node.host}:{node.port}",
        outcome="success" if res.ok else "failed",
        reason="" if res.ok else res.kind if res.kind in TLS_KINDS else (res.error or "").split(":")[0],
        detail={"status": res.status, "elapsed_ms": res.elapsed_ms, "tls": res.tls or "plain",
                **({"cause": res.tls_cause} if res.tls_cause else {})},
    )
    return res.to_dict()


# -- events -------------------------------------------------------------------------------
def _types(raw: str | None) -> set[str] | None:
    types = {t.strip() for t in (raw or "").split(",") if t.strip()}
    return types or None


@bp.get("/events")
@protected(422)
@bp.input(s.EventsQuery, location="query", arg_name="query")
@bp.output(s.EventOut(many=True))
@bp.doc(summary="Recent events, oldest first (since = after that id; type = comma-separated types)")
def list_events(query: dict[str, Any]):
    events = resources().registry.read_events(query.get("since"), query["limit"], _types(query.get("type")))
    return [e.to_dict() for e in events]


@bp.get("/events/stream")
@protected(422)
@bp.input(s.StreamQuery, location="query", arg_name="query")
@bp.output({}, content_type="text/event-stream",
           description="Server-Sent Events: `id` is the event id, `event` its type, `data` the event as JSON")
@bp.doc(summary="Live events as Server-Sent Events; resumes after the Last-Event-ID header")
def stream_events(query: dict[str, Any]):
    return event_stream(query.get("backlog", 0), _types(query.get("type")))


# -- studies ----------------------------------------------------------------------------------
@bp.get("/studies")
@protected(422)
@bp.input(s.StudiesQuery, location="query", arg_name="query")
@bp.output(s.StudyOut(many=True))
@bp.doc(summary="Received studies, most recent first")
def list_studies(query: dict[str, Any]):
    from .commitment_api import add_study_states

    return add_study_states(resources().registry.list_studies(query["limit"]))


@bp.get("/studies/<uid>")
@protected()
@bp.output(s.StudyDetailOut)
@bp.doc(summary="One received study with its series")
def get_study(uid: str):
    if len(uid) > 64 or not re.fullmatch(s.UID_PATTERN, uid):
        raise NotFound(f"No study with the Study Instance UID {uid!r} was received.")
    return resources().registry.get_study(uid)


# -- simulator ------------------------------------------------------------------------------------
def _job_out(job: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": job["id"], "state": job.get("state", ""), "request": job.get("request") or {},
            "result": job.get("result")}


@bp.post("/simulator/send")
@protected(422)
@bp.input(s.SendIn, arg_name="data")
@bp.output(s.JobOut, status_code=202)
@bp.doc(summary="Ask the CT simulator worker to send a study (202 + job id)")
def simulator_send(data: dict[str, Any]):
    reg = resources().registry
    request = dict(data)
    if "called_aet" not in request or "port" not in request:
        listener = reg.get_listener()
        request.setdefault("called_aet", listener.ae_title)
        request.setdefault("port", listener.port)
    request.setdefault("host", current_app.config["PACS_HOST"])
    job_id = reg.enqueue_job(request)
    return (_job_out(reg.get_job(job_id)), 202,
            {"Location": url_for("api.simulator_job", job_id=job_id)})


@bp.get("/simulator/jobs/<job_id>")
@protected()
@bp.output(s.JobOut)
@bp.doc(summary="One simulator send request and its progress")
def simulator_job(job_id: str):
    if not job_id.isalnum() or len(job_id) > 64:
        raise NotFound(f"No simulator job {job_id!r}.")
    return _job_out(resources().registry.get_job(job_id))
