"""The worker: takes send requests from Redis, and answers C-ECHO on SIM_PORT.

A request (queued by the admin API with ``Registry.enqueue_job``) may carry
``studies, series, slices, rows, cols, calling_aet, called_aet, host, port,
transfer_syntax, seed, patient_name, patient_id``; what it leaves out comes
from the environment (SIM_AE_TITLE, PACS_HOST) and from the PACS listener
settings stored in Redis (AE title, port). Progress goes to the job hash
(``Registry.update_job``) and to the event stream (``EventLog``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from dicomlab import events as ev
from dicomlab.dicom import VERIFICATION
from dicomlab.errors import RegistryUnavailable
from dicomlab.events import EventLog
from dicomlab.registry import Registry
from dicomlab.settings import EnvConfig

from .iod import StudyPlan
from .network import Link, set_nodelay
from .sender import SendOptions, SendReport, send
from .syntaxes import resolve

LOG = logging.getLogger(__name__)

REQUEST_KEYS = ("studies", "series", "slices", "rows", "cols", "calling_aet", "called_aet", "host", "port",
                "transfer_syntax", "seed", "patient_name", "patient_id")
LIMITS = {"studies": (1, 20), "series": (1, 20), "slices": (1, 5000), "rows": (16, 2048), "cols": (16, 2048),
          "port": (1, 65535), "seed": (0, 2**31 - 1)}


class BadRequest(ValueError):
    """A job request the worker cannot run; the message names the field."""


@dataclass
class Job:
    plan: StudyPlan
    link: Link
    options: SendOptions


def job_from_request(request: dict[str, Any], env: EnvConfig, registry: Registry | None) -> Job:
    """Fill the request's gaps from the environment and the PACS listener settings."""
    unknown = sorted(set(request) - set(REQUEST_KEYS))
    if unknown:
        raise BadRequest(f"unknown request field(s): {', '.join(unknown)}")
    nums: dict[str, int] = {}
    for key, (lo, hi) in LIMITS.items():
        if request.get(key) in (None, ""):
            continue
        try:
            value = int(request[key])
        except (TypeError, ValueError):
            raise BadRequest(f"{key} must be a whole number ({request[key]!r} given)") from None
        if not lo <= value <= hi:
            raise BadRequest(f"{key} must be from {lo} to {hi} ({value} given)")
        nums[key] = value
    called, port = env.pacs_ae_title, env.pacs_port
    if registry is not None and (not request.get("called_aet") or "port" not in nums):
        listener = registry.get_listener()  # RegistryUnavailable propagates: the job waits
        called, port = listener.ae_title, listener.port
    plan = StudyPlan(
        studies=nums.get("studies", 1), series=nums.get("series", 1), slices=nums.get("slices", 50),
        rows=nums.get("rows", 512), cols=nums.get("cols", 512),
        seed=nums["seed"] if "seed" in nums else random.randrange(2**31),
        patient_name=request.get("patient_name") or None, patient_id=request.get("patient_id") or None,
        station_name=env.sim_ae_title,
    )
    link = Link(host=str(request.get("host") or env.pacs_host), port=nums.get("port", port),
                calling_aet=str(request.get("calling_aet") or env.sim_ae_title),
                called_aet=str(request.get("called_aet") or called))
    options = SendOptions()
    if request.get("transfer_syntax"):
        try:
            options.transfer_syntaxes = (resolve(str(request["transfer_syntax"])),)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    return Job(plan, link, options)


def run_job(job_id: str, request: dict[str, Any], registry: Registry, log: EventLog, env: EnvConfig) -> SendReport | None:
    """One job, start to finish; the job hash and the events say what happened."""
    try:
        job = job_from_request(request, env, registry)
    except BadRequest as exc:
        registry.update_job(job_id, state="failed", finished=f"{time.time():.3f}",
                            result={"problem": {"kind": "bad-request", "message": str(exc)}})
        log.emit(ev.SEND_FAILED, f"Send request {job_id} refused: {exc}.", level="error", outcome="failed",
                 reason="bad-request", detail={"job": job_id})
        return None
    plan, link = job.plan, job.link
    who = {"calling_aet": link.calling_aet, "called_aet": link.called_aet, "peer": link.peer}
    registry.update_job(job_id, state="running", started=f"{time.time():.3f}", total=plan.total, sent=0, failed=0)
    log.emit(ev.SEND_STARTED, f"Sending {plan.total} CT images ({plan.studies} study, {plan.series} series, "
             f"{plan.slices} slices of {plan.rows}x{plan.cols}, seed {plan.seed}) to {link.called_aet} at {link.peer}.",
             detail={"job": job_id, "total": plan.total, "seed": plan.seed}, **who)
    last = [time.monotonic()]

    def progress(done: int, failed: int) -> None:
        now = time.monotonic()
        if done != plan.total and now - last[0] < 1.0:
            return
        last[0] = now
        registry.update_job(job_id, sent=done - failed, failed=failed)
        log.emit(ev.SEND_PROGRESS, f"{done} of {plan.total} CT images sent ({failed} failed).",
                 level="debug", detail={"job": job_id, "done": done, "failed": failed, "total": plan.total}, **who)

    report = send(plan, link, job.options, progress)
    result = report.to_dict()
    for note in report.notes:
        log.emit(ev.SEND_PROGRESS, note, level="warning", detail={"job": job_id}, **who)
    if report.problem is None:
        registry.update_job(job_id, state="done", finished=f"{time.time():.3f}", sent=report.sent,
                            failed=report.failed, result=result)
        log.emit(ev.SEND_FINISHED, f"Sent {report.sent} CT images to {link.called_aet} in {report.elapsed:.1f} s "
                 f"({report.rate:.0f} images/s).", outcome="ok", detail={"job": job_id, **result}, **who)
    else:
        p = report.problem
        registry.update_job(job_id, state="failed", finished=f"{time.time():.3f}", sent=report.sent,
                            failed=report.failed, result=result)
        log.emit(ev.SEND_FAILED, f"{p.message} {p.hint}".strip(), level="error", outcome="failed", reason=p.kind,
                 detail={"job": job_id, **result}, **who)
    return report


def start_echo_scp(env: EnvConfig, log: EventLog, bind: str = "0.0.0.0", port: int | None = None) -> ThreadedAssociationServer:
    """The CT's Verification SCP, so the PACS (or anyone) can echo the CT."""
    ae = AE(ae_title=env.sim_ae_title)
    ae.require_called_aet = True
    ae.add_supported_context(VERIFICATION)

    def on_echo(event: evt.Event) -> int:
        req = event.assoc.requestor
        log.emit(ev.ECHO_RECEIVED, f"C-ECHO from {req.ae_title} answered Success.", outcome="ok",
                 calling_aet=req.ae_title, called_aet=env.sim_ae_title, peer=f"{req.address}:{req.port}")
        return 0x0000  # Success

    handlers = [(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_C_ECHO, on_echo)]
    return ae.start_server((bind, env.sim_port if port is None else port), block=False, evt_handlers=handlers)


def run(registry: Registry, log: EventLog, env: EnvConfig, stop: threading.Event, *, max_jobs: int | None = None,
        bind: str = "0.0.0.0", echo_port: int | None = None, poll: float = 1.0) -> int:
    """Serve jobs until ``stop`` is set (or ``max_jobs`` ran); returns how many ran."""
    server = start_echo_scp(env, log, bind, echo_port)
    port = server.server_address[1]
    log.emit(ev.LISTENER_STARTED, f"CT simulator {env.sim_ae_title} answers C-ECHO on port {port} and waits for "
             "send requests.", detail={"port": port})
    ran = 0
    down = False
    try:
        while not stop.is_set() and (max_jobs is None or ran < max_jobs):
            try:
                item = registry.pop_job(timeout=poll)
                if down:
                    log.emit(ev.SEND_PROGRESS, "The registry (Redis) answers again; taking send requests.")
                    down = False
                if item is None:
                    continue
                job_id, request = item
                run_job(job_id, request, registry, log, env)
                ran += 1
            except RegistryUnavailable as exc:
                if not down:
                    log.emit(ev.SEND_FAILED, f"{exc}; retrying every 2 s.", level="error", reason="registry-unavailable")
                    down = True
                stop.wait(2.0)
    finally:
        server.shutdown()
        log.emit(ev.LISTENER_STOPPED, f"CT simulator {env.sim_ae_title} stopped answering C-ECHO on port {port}.")
    return ran
