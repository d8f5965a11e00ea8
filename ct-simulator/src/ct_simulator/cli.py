"""The command line: ``ct-simulator generate | echo | send | worker | bench | scenarios``.

Thin: parse, build a plan / link / options, call the library, print a
summary for a PACS administrator, return an exit code (see ``outcome``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dicomlab.conformance import SIM_SOP_CLASSES
from dicomlab.errors import LabError
from dicomlab.settings import EnvConfig
from dicomlab.text import safe_text

from . import outcome
from .iod import StudyPlan, iter_instances, write_part10
from .network import Link, quiet_pynetdicom
from .outcome import Problem
from .sender import EchoReport, SendOptions, SendReport, echo, send
from .syntaxes import DEFAULT_PROPOSAL, encode_for, resolve

SOP_CLASSES = SIM_SOP_CLASSES  # one list, shared with the conformance statement


def _env() -> EnvConfig:
    return EnvConfig.from_env()


def _listener_defaults(env: EnvConfig) -> tuple[str, int, int]:
    """The PACS's AE title, plain port and TLS port: Redis's listener settings when REDIS_URL answers,
    else the env seeds (PACS_TLS_PORT, else 2762, the port registered for DICOM TLS)."""
    tls_port = int(os.environ.get("PACS_TLS_PORT") or 2762)
    if env.redis_url:
        try:
            from dicomlab.registry import Registry, connect

            client = connect(env.redis_url, timeout=1.0)
            try:
                listener = Registry(client).get_listener()
                return listener.ae_title, listener.port, listener.tls_port
            finally:
                client.close()
        except LabError:
            pass
    return env.pacs_ae_title, env.pacs_port, tls_port


def _add_plan(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to generate")
    g.add_argument("--studies", type=int, default=1, help="studies (default 1)")
    g.add_argument("--series", type=int, default=1, help="series per study (default 1)")
    g.add_argument("--slices", type=int, default=50, help="slices per series (default 50)")
    g.add_argument("--rows", type=int, default=512, help="rows (default 512)")
    g.add_argument("--cols", type=int, default=512, help="columns (default 512)")
    g.add_argument("--seed", type=int, default=None, help="same seed, same objects (default: a new random seed)")
    g.add_argument("--patient-name", help="Patient's Name, e.g. DOE^JANE (default: from the seed)")
    g.add_argument("--patient-id", help="Patient ID (default: from the seed)")
    g.add_argument("--accession-number", help="Accession Number (default: from the seed)")
    g.add_argument("--study-description", default="CT THORAX ABDOMEN")
    g.add_argument("--spacing", type=float, default=None, help="slice spacing in mm (default: the scan covers 500 mm)")
    g.add_argument("--sop-class", default="ct",
                   help="SOP class of the objects: ct, enhanced-ct, mr, sc or a UID; anything but ct is a "
                        "misbehaviour (CT pixels under another SOP class) to test what the PACS accepts")
    g.add_argument("--duplicate-uids", action="store_true",
                   help="misbehave: every instance of a series reuses one SOP Instance UID")


def _add_link(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where to send (defaults: SIM_AE_TITLE, PACS_HOST, and the PACS listener settings "
                             "in Redis, else PACS_AE_TITLE / PACS_PORT)")
    g.add_argument("--host", help="PACS host")
    g.add_argument("--port", type=int, help="PACS port")
    g.add_argument("--calling-aet", help="our AE title, sent as given even when invalid (over 16 characters: cut to 16)")
    g.add_argument("--called-aet", help="the PACS's AE title, sent as given")
    g.add_argument("--timeout", type=float, default=10.0, help="seconds for TCP connect and association answer (10)")
    g.add_argument("--dimse-timeout", type=float, default=60.0, help="seconds to wait for each C-STORE answer (60)")
    _add_tls(p)


def _add_tls(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("DICOM TLS (TLS 1.2 or later; the PACS's certificate and host name are checked)")
    g.add_argument("--tls", action="store_true",
                   help="use DICOM TLS; the default port becomes the PACS's TLS port (2762)")
    g.add_argument("--tls-ca", metavar="FILE", help="the CA certificate(s) to trust (the lab CA: ca.pem)")
    g.add_argument("--tls-cert", metavar="FILE", help="this CT's certificate (PEM; may hold the key too)")
    g.add_argument("--tls-key", metavar="FILE", help="this CT's private key (PEM)")
    g.add_argument("--tls-bundle", metavar="FILE",
                   help="one PEM file with certificate, key and CA, as the admin API issues it")
    g.add_argument("--tls-request-cert", action="store_true",
                   help="ask the admin API (ADMIN_URL or --api, ADMIN_TOKEN or --token) to issue this CT's "
                        "certificate (a PEM bundle for the node with the calling AE title)")
    g.add_argument("--api", help="admin API base URL (default ADMIN_URL, else http://127.0.0.1:$ADMIN_PORT)")
    g.add_argument("--token", help="admin API token (default ADMIN_TOKEN)")
    g.add_argument("--tls-server-name", metavar="NAME",
                   help="the name to check in the PACS's certificate (default: --host)")
    g.add_argument("--tls-no-host-check", action="store_true",
                   help="do not check the PACS's host name against its certificate (the chain is still "
                        "verified); for a lab only")
    g.add_argument("--tls-lab-ca", metavar="DIR",
                   help="the lab CA's folder (ca.pem, ca.key), to sign the misbehaving certificates below")
    m = p.add_argument_group("DICOM TLS misbehaviour")
    m.add_argument("--tls-trust-other-ca", action="store_true",
                   help="trust a CA of our own instead of the lab's (the PACS's certificate looks unknown)")
    m.add_argument("--tls-no-cert", action="store_true", help="present no client certificate")
    m.add_argument("--tls-expired-cert", action="store_true",
                   help="present a lab CA certificate that expired yesterday (needs --tls-lab-ca)")
    m.add_argument("--tls-cert-of", metavar="AE",
                   help="present another node's certificate (from the admin API with --tls-request-cert, "
                        "else signed with --tls-lab-ca)")
    m.add_argument("--tls-outdated", action="store_true",
                   help="offer TLS 1.0 and 1.1 only (OpenSSL security level 0)")
    m.add_argument("--wrong-port", action="store_true",
                   help="with --tls, send to the PACS's plain port; without, send plain DICOM to its TLS port")


def _tls(a: argparse.Namespace, env: EnvConfig) -> Any:
    from .tls import TlsSpec

    if not a.tls:
        for flag in ("tls_ca", "tls_cert", "tls_key", "tls_bundle", "tls_request_cert", "tls_trust_other_ca",
                     "tls_no_cert", "tls_expired_cert", "tls_cert_of", "tls_outdated", "tls_no_host_check"):
            if getattr(a, flag, None):
                raise ValueError(f"--{flag.replace('_', '-')} needs --tls")
        return None
    request = None
    if a.tls_request_cert:
        token = a.token or env.admin_token
        if not token:
            raise ValueError("--tls-request-cert needs the admin token: ADMIN_TOKEN or --token")
        request = (a.api or os.environ.get("ADMIN_URL") or f"http://127.0.0.1:{env.admin_port}", token)
    return TlsSpec(ca_file=a.tls_ca, cert_file=a.tls_cert, key_file=a.tls_key, bundle=a.tls_bundle,
                   check_hostname=not a.tls_no_host_check, server_name=a.tls_server_name, request_from=request,
                   lab_ca_dir=a.tls_lab_ca, trust_other_ca=a.tls_trust_other_ca, no_cert=a.tls_no_cert,
                   expired_cert=a.tls_expired_cert, cert_of=a.tls_cert_of, outdated=a.tls_outdated)


def _plan(a: argparse.Namespace, station: str) -> StudyPlan:
    sop = SOP_CLASSES.get(a.sop_class.lower(), a.sop_class)
    seed = a.seed
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "big") >> 1
    return StudyPlan(studies=a.studies, series=a.series, slices=a.slices, rows=a.rows, cols=a.cols, seed=seed,
                     patient_name=a.patient_name, patient_id=a.patient_id, accession_number=a.accession_number,
                     study_description=a.study_description, station_name=station, slice_spacing_mm=a.spacing,
                     sop_class_uid=sop, duplicate_uids=a.duplicate_uids)


def _link(a: argparse.Namespace, env: EnvConfig) -> Link:
    tls = _tls(a, env)
    called, port = (a.called_aet, a.port)
    if a.wrong_port and port is not None:
        raise ValueError("--wrong-port picks the port itself: leave out --port")
    if called is None or port is None:
        d_called, d_plain, d_tls = _listener_defaults(env)
        called = d_called if called is None else called
        if port is None:
            port = d_tls if (tls is not None) != a.wrong_port else d_plain
    return Link(host=a.host or env.pacs_host, port=port, calling_aet=a.calling_aet or env.sim_ae_title,
                called_aet=called, connect_timeout=a.timeout, acse_timeout=a.timeout, dimse_timeout=a.dimse_timeout,
                tls=tls)


def _add_ladder(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ladder", action="store_true",
                   help="print each association as a ladder diagram, as the simulator saw it: TCP connect, "
                        "A-ASSOCIATE-RQ and its contexts, AC or RJ, the C-STOREs collapsed with counts and "
                        "round trips, release or abort (with --json: a \"ladders\" list)")


def _check_plan(plan: StudyPlan) -> None:
    for name in ("studies", "series", "slices"):
        if getattr(plan, name) < 1:
            raise ValueError(f"--{name} must be at least 1")
    if not (16 <= plan.rows <= 4096 and 16 <= plan.cols <= 4096):
        raise ValueError("--rows and --cols must be from 16 to 4096")


def _say(line: str, file: Any = None) -> None:
    """One line for the terminal: what came from the PACS (statuses, AE titles, comments)
    is shown with its control characters escaped (``dicomlab.text.safe_text``)."""
    print(safe_text(line), file=file if file is not None else sys.stdout)


def _print_problem(problem: Problem, out: Any) -> None:
    _say(f"FAILED: {problem.message}", file=out)
    if problem.hint:
        _say(f"  fix: {problem.hint}", file=out)


# -- commands -------------------------------------------------------------------
def cmd_generate(a: argparse.Namespace) -> int:
    env = _env()
    plan = _plan(a, env.sim_ae_title)
    _check_plan(plan)
    syntax = resolve(a.transfer_syntax) if a.transfer_syntax else DEFAULT_PROPOSAL[0]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    bar = _bar(plan.total, a.progress, "generating")
    n = 0
    for inst in iter_instances(plan):
        ds = encode_for(inst.dataset, syntax)
        folder = out / f"study{inst.study:02d}" / f"series{inst.series:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        write_part10(ds, folder / f"CT{inst.number:05d}.dcm")
        n += 1
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    elapsed = time.perf_counter() - started
    print(f"Wrote {n} CT images ({plan.studies} study, {plan.series} series, {plan.slices} slices of "
          f"{plan.rows}x{plan.cols}, seed {plan.seed}) to {out} in {elapsed:.1f} s ({n / elapsed:.0f} images/s).")
    return outcome.EXIT_OK


def _print_echo(link: Link, rep: EchoReport) -> None:
    for note in rep.notes:
        _say(f"note: {note}")
    if rep.problem is None:
        over = f" over {link.tls_session}" if link.tls_session else ""
        _say(f"C-ECHO {link.calling_aet} -> {link.called_aet}@{link.peer}{over}: Success ({rep.elapsed_ms:.0f} ms).")
    else:
        _print_problem(rep.problem, sys.stdout)


def cmd_echo(a: argparse.Namespace) -> int:
    env = _env()
    link = _link(a, env)
    link.ladder = a.ladder
    rep = echo(link)
    _print_echo(link, rep)
    if link.trace is not None:
        _print_ladders([link.trace.build()])
    return rep.exit_code


def _print_ladders(ladders: list[dict[str, Any]]) -> None:
    """``--ladder``: each association as the simulator saw it (``dicomlab.ladder.to_text``)."""
    from dicomlab.ladder import to_text

    for ladder in ladders:
        print()
        print(to_text(ladder))


def _bar(total: int, mode: str, desc: str) -> Any:
    show = mode == "always" or (mode == "auto" and sys.stderr.isatty() and total > 1)
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)


def _summary(plan: StudyPlan, link: Link, rep: SendReport) -> None:
    for note in rep.notes:
        _say(f"note: {note}")
    accepted = ", ".join(f"{k} as {v}" for k, v in rep.accepted.items()) or "nothing"
    rate = f" in {rep.elapsed:.1f} s ({rep.rate:.0f} images/s)" if rep.sent + rep.failed else ""
    over = f" over {rep.tls_session}" if rep.tls_session else ""
    _say(f"{link.calling_aet} -> {link.called_aet}@{link.peer}{over}: {rep.sent} of {rep.total} CT images sent, "
         f"{rep.failed} failed{rate}; accepted: {accepted}; seed {plan.seed}.")
    if rep.warnings:
        _say(f"  {rep.warnings} stored with a warning status.")
    for words, count in sorted(rep.statuses.items()):
        if not words.startswith("0x0000"):
            _say(f"  {count} x {words}")
    if rep.problem is not None:
        _print_problem(rep.problem, sys.stdout)


def cmd_send(a: argparse.Namespace) -> int:
    env = _env()
    link = _link(a, env)
    link.ladder = a.ladder
    plan = _plan(a, env.sim_ae_title)
    _check_plan(plan)
    syntaxes = tuple(resolve(t) for t in a.transfer_syntax) if a.transfer_syntax else DEFAULT_PROPOSAL
    options = SendOptions(transfer_syntaxes=syntaxes, associations=max(1, a.associations),
                          abort_after=a.abort_after, delay=max(0.0, a.delay),
                          record=a.report_json is not None or a.commit)
    listener = _commit_listener(a, env, link) if a.commit else None
    bar = _bar(plan.total, a.progress, f"{link.calling_aet} -> {link.called_aet}")

    def progress(done: int, failed: int) -> None:
        if bar:
            bar.update(done - bar.n)
            if failed:
                bar.set_postfix(failed=failed, refresh=False)

    try:
        rep = send(plan, link, options, progress)
        if bar:
            bar.close()
        committed = _commit_after_send(a, plan, link, rep, listener) if a.commit else None
    finally:
        if listener is not None:
            listener.stop()
    data = rep.to_dict()
    if committed is not None:
        data["commitment"] = committed.to_dict()
    if a.report_json:
        _write_report(Path(a.report_json), {**data, "seed": plan.seed, "instances": rep.instances})
    if a.json:
        if a.ladder:
            data["ladders"] = rep.ladders
        print(json.dumps(data, indent=2))
    else:
        _summary(plan, link, rep)
        _print_ladders(rep.ladders)
        if committed is not None:
            _commit_summary(committed)
    if rep.exit_code != outcome.EXIT_OK or committed is None:
        return rep.exit_code
    return committed.exit_code


def _commit_listener(a: argparse.Namespace, env: EnvConfig, link: Link) -> Any:
    """The listener for the report, started before anything is sent (None: --no-listen, on purpose)."""
    if a.no_listen:
        return None
    from .listener import Listener

    port = env.sim_port if a.listen_port is None else a.listen_port
    try:
        return Listener(link.calling_aet, port, a.listen_folder, bind=a.listen_bind,
                        report_status=a.report_status).start()
    except OSError as exc:
        busy = " (while the lab runs, the simulator worker answers C-ECHO on SIM_PORT)" if port == env.sim_port else ""
        raise ValueError(f"cannot listen for the storage commitment report on port {port}: "
                         f"{exc.strerror or exc}{busy}. Give --listen-port N, and register N as the node's port "
                         "on the PACS: the report goes there") from None


def _commit_after_send(a: argparse.Namespace, plan: StudyPlan, link: Link, rep: SendReport, listener: Any) -> Any:
    from .commit import commit

    refs = [(plan.sop_class_uid, row["sop_instance_uid"]) for row in rep.instances if row["status"] == 0x0000]
    refs += [(plan.sop_class_uid, uid) for uid in a.commit_extra or []]
    if not refs:
        return None
    return commit(link, refs, listener, a.commit_timeout)


def _commit_summary(c: Any) -> None:
    for note in c.notes:
        _say(f"note: {note}")
    if c.report is not None:
        r = c.report
        _say(f"storage commitment {c.transaction_uid}: {len(r.committed)} committed, {len(r.failed)} failed "
             f"(report from {r.calling_aet} at {r.peer}, answered 0x{r.answered:04X}).")
        for _cls, uid, reason in r.failed[:10]:
            _say(f"  not committed: {uid} (failure reason 0x{reason:04X})")
    if c.problem is not None:
        _print_problem(c.problem, sys.stdout)


def _write_report(path: Path, data: dict[str, Any]) -> None:
    """Write the JSON report whole or not at all (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def cmd_listen(a: argparse.Namespace) -> int:
    from .listener import Listener

    env = _env()
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    lst = Listener(a.ae_title or env.sim_ae_title, env.sim_port if a.port is None else a.port, a.folder,
                   bind=a.bind, accept_from=a.accept_from, report_status=a.report_status)
    try:
        lst.start()
    except OSError as exc:
        _say(f"FAILED: cannot listen on port {lst.port}: {exc}", file=sys.stderr)
        return outcome.EXIT_ERROR
    _say(f"{lst.ae_title} listens on port {lst.port}: C-ECHO, C-STORE "
         f"({'into ' + str(lst.folder) if lst.folder else 'refused: no --folder'}), storage commitment reports.")
    sys.stdout.flush()
    shown = 0
    try:
        while not stop.wait(0.2):
            while shown < len(lst.log):
                _say(lst.log[shown])
                shown += 1
            sys.stdout.flush()
    finally:
        lst.stop()
    return outcome.EXIT_OK


def cmd_worker(a: argparse.Namespace) -> int:
    from dicomlab.events import EventLog
    from dicomlab.registry import Registry, connect

    from . import worker

    env = _env()
    if not env.redis_url:
        print("FAILED: the worker needs REDIS_URL (the registry it takes send requests from).", file=sys.stderr)
        return outcome.EXIT_REGISTRY
    client = connect(env.redis_url, timeout=10.0)
    registry = Registry(client)
    log = EventLog(client, source="ct-simulator")
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    worker.run(registry, log, env, stop, max_jobs=a.max_jobs, bind=a.bind, echo_port=a.echo_port)
    return outcome.EXIT_OK


def cmd_bench(a: argparse.Namespace) -> int:
    from . import bench

    env = _env()
    link = _link(a, env) if (a.port or a.host) else None
    return bench.run(a.slices, a.rows, a.cols, link, a.storescu)


def cmd_conformance(a: argparse.Namespace) -> int:
    """The simulator's own conformance statement (no network), as text or JSON."""
    from dicomlab.conformance import simulator_statement

    env = _env()
    st = simulator_statement(env.sim_ae_title, env.sim_port)
    if a.json:
        print(json.dumps(st, indent=2))
        return outcome.EXIT_OK
    _say(st["title"])
    _say(f"  roles: {', '.join(st['application_entity']['roles'])}; C-ECHO answered on port {env.sim_port} (worker)")
    for sc in st["sop_classes"]:
        _say(f"  {sc['name']} as {sc['role']} ({sc['service']}): "
             + ", ".join(t["name"] for t in sc["transfer_syntaxes"]))
    _say(f"  {st['proposal']}")
    _say("  on request:")
    for opt in st["on_request"]["transfer_syntaxes"]:
        _say(f"    {opt['option']:<32} {opt['name']}" + ("" if opt["encodable"] else " (proposed, not encodable)"))
    for opt in st["on_request"]["sop_classes"]:
        _say(f"    {opt['option']:<32} {opt['name']}" + (f" ({opt['note']})" if opt["note"] else ""))
    return outcome.EXIT_OK


# -- parser ---------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ct-simulator", description="DICOM Lab's CT modality: generates CT studies "
                                "and sends them to a PACS, misconfigured on demand.",
                                epilog=outcome.EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show pynetdicom's own log")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write Part 10 files to a folder")
    _add_plan(g)
    g.add_argument("--out", required=True, help="folder to write to (study01/series01/CT00001.dcm ...)")
    g.add_argument("--transfer-syntax", help="explicit (default), implicit, deflated, rle, j2k")
    g.add_argument("--progress", choices=["auto", "always", "never"], default="auto")
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("echo", help="C-ECHO the PACS", epilog=outcome.EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_link(e)
    _add_ladder(e)
    e.set_defaults(func=cmd_echo)

    s = sub.add_parser("send", help="generate and C-STORE studies to the PACS", epilog=outcome.EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_plan(s)
    _add_link(s)
    _add_ladder(s)
    s.add_argument("--transfer-syntax", action="append",
                   help="propose only this transfer syntax (repeatable): explicit, implicit, deflated, rle, j2k, "
                        "jpeg-ls (proposed but not encodable) or a UID; default: explicit and implicit")
    s.add_argument("--associations", type=int, default=1, help="associations in parallel (default 1)")
    s.add_argument("--abort-after", type=int, help="misbehave: send an A-ABORT after this many instances")
    s.add_argument("--delay", type=float, default=0.0, help="misbehave: seconds between instances")
    s.add_argument("--progress", choices=["auto", "always", "never"], default="auto")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("--report-json", metavar="PATH",
                   help="also write the report to PATH as JSON, with one row per C-STORE tried: SOP Instance "
                        "UID, study and series UIDs, status (null: no answer) and the SHA-256 of the dataset "
                        "bytes sent")
    s.set_defaults(func=cmd_send)

    s.add_argument("--commit", action="store_true",
                   help="after sending, request Storage Commitment (N-ACTION on a new association) and wait for "
                        "the PACS's report on our own listener (SIM_PORT)")
    s.add_argument("--commit-timeout", type=float, default=60.0,
                   help="seconds to wait for the storage commitment report (60)")
    s.add_argument("--commit-extra", action="append", metavar="UID",
                   help="also ask commitment for this SOP Instance UID (never sent; repeatable)")
    s.add_argument("--listen-port", type=int, help="port for the report listener (default SIM_PORT)")
    s.add_argument("--listen-bind", default="0.0.0.0", help="address for the report listener (default all)")
    s.add_argument("--listen-folder", help="folder for C-STOREs the listener receives (default: refuse them)")
    s.add_argument("--no-listen", action="store_true",
                   help="misbehave: request commitment but do not listen for the report")
    s.add_argument("--report-status", type=lambda v: int(v, 0), default=0,
                   help="misbehave: answer the report with this status, e.g. 0x0110 (default 0x0000)")

    li = sub.add_parser("listen", help="answer C-ECHO, C-STORE (into a folder) and storage commitment reports")
    li.add_argument("--port", type=int, help="port (default SIM_PORT)")
    li.add_argument("--bind", default="0.0.0.0", help="address (default all)")
    li.add_argument("--ae-title", help="our AE title (default SIM_AE_TITLE)")
    li.add_argument("--folder", help="folder for C-STOREs (default: refuse them)")
    li.add_argument("--accept-from", action="append", metavar="AET",
                    help="accept associations only from this calling AE title (repeatable; default any)")
    li.add_argument("--report-status", type=lambda v: int(v, 0), default=0,
                    help="misbehave: answer storage commitment reports with this status, e.g. 0x0110")
    li.set_defaults(func=cmd_listen)

    w = sub.add_parser("worker", help="take send requests from Redis; answer C-ECHO on SIM_PORT")
    w.add_argument("--bind", default="0.0.0.0", help="address for the C-ECHO listener (default all)")
    w.add_argument("--echo-port", type=int, help="port for the C-ECHO listener (default SIM_PORT)")
    w.add_argument("--max-jobs", type=int, help="stop after this many jobs (tests)")
    w.set_defaults(func=cmd_worker)

    from .qr import add_parsers as add_qr  # find | move | get

    add_qr(sub, _add_link, lambda a: _link(a, _env()))

    b = sub.add_parser("bench", help="slices/s generated, and sent when --host/--port is given")
    b.add_argument("--slices", type=int, default=300)
    b.add_argument("--rows", type=int, default=512)
    b.add_argument("--cols", type=int, default=512)
    b.add_argument("--storescu", action="store_true", help="also time DCMTK storescu on the same files")
    _add_link(b)
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("conformance", help="print the simulator's conformance statement (what it proposes)")
    c.add_argument("--json", action="store_true", help="as JSON (the admin API serves the same)")
    c.set_defaults(func=cmd_conformance)

    from .scenarios.cli import add_parser as add_scenarios

    add_scenarios(sub)
    return p


def main(args: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(args)
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    quiet_pynetdicom(a.debug)
    try:
        return int(a.func(a))
    except (ValueError, LabError) as exc:
        _say(f"FAILED: {exc}", file=sys.stderr)
        return outcome.EXIT_ERROR
