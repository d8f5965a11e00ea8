"""The command line: ``ct-simulator generate | echo | send | listen | worker | find | move | get
| bench | conformance | scenarios``.

Thin: parse, build a plan / link / options (``cliargs``), call the library, print a
summary for a PACS administrator (``console``), return an exit code (see ``outcome``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dicomlab.errors import LabError
from dicomlab.settings import EnvConfig

from . import outcome
from .cliargs import SOP_CLASSES, add_ladder, add_link, add_plan, check_plan, env_config, link_of, plan_of
from .console import (
    commit_summary,
    print_echo,
    print_ladders,
    progress_bar,
    say,
    send_summary,
    write_report,
)
from .iod import StudyPlan, iter_instances, write_part10
from .network import Link, quiet_pynetdicom
from .sender import SendOptions, SendReport, echo, send
from .syntaxes import DEFAULT_PROPOSAL, encode_for, resolve

__all__ = ["SOP_CLASSES", "build_parser", "main"]
_say = say  # the name tests/pacs/test_untrusted_text.py calls


# -- commands -------------------------------------------------------------------
def cmd_generate(a: argparse.Namespace) -> int:
    env = env_config()
    plan = plan_of(a, env.sim_ae_title)
    check_plan(plan)
    syntax = resolve(a.transfer_syntax) if a.transfer_syntax else DEFAULT_PROPOSAL[0]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    bar = progress_bar(plan.total, a.progress, "generating")
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


def cmd_echo(a: argparse.Namespace) -> int:
    env = env_config()
    link = link_of(a, env)
    link.ladder = a.ladder
    rep = echo(link)
    print_echo(link, rep)
    if link.trace is not None:
        print_ladders([link.trace.build()])
    return rep.exit_code


def cmd_send(a: argparse.Namespace) -> int:
    env = env_config()
    link = link_of(a, env)
    link.ladder = a.ladder
    plan = plan_of(a, env.sim_ae_title)
    check_plan(plan)
    syntaxes = tuple(resolve(t) for t in a.transfer_syntax) if a.transfer_syntax else DEFAULT_PROPOSAL
    options = SendOptions(transfer_syntaxes=syntaxes, associations=max(1, a.associations),
                          abort_after=a.abort_after, delay=max(0.0, a.delay),
                          record=a.report_json is not None or a.commit)
    listener = _commit_listener(a, env, link) if a.commit else None
    bar = progress_bar(plan.total, a.progress, f"{link.calling_aet} -> {link.called_aet}")

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
        write_report(Path(a.report_json), {**data, "seed": plan.seed, "instances": rep.instances})
    if a.json:
        if a.ladder:
            data["ladders"] = rep.ladders
        print(json.dumps(data, indent=2))
    else:
        send_summary(plan, link, rep)
        print_ladders(rep.ladders)
        if committed is not None:
            commit_summary(committed)
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


def cmd_listen(a: argparse.Namespace) -> int:
    from .listener import Listener

    env = env_config()
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    lst = Listener(a.ae_title or env.sim_ae_title, env.sim_port if a.port is None else a.port, a.folder,
                   bind=a.bind, accept_from=a.accept_from, report_status=a.report_status)
    try:
        lst.start()
    except OSError as exc:
        say(f"FAILED: cannot listen on port {lst.port}: {exc}", file=sys.stderr)
        return outcome.EXIT_ERROR
    say(f"{lst.ae_title} listens on port {lst.port}: C-ECHO, C-STORE "
         f"({'into ' + str(lst.folder) if lst.folder else 'refused: no --folder'}), storage commitment reports.")
    sys.stdout.flush()
    shown = 0
    try:
        while not stop.wait(0.2):
            while shown < len(lst.log):
                say(lst.log[shown])
                shown += 1
            sys.stdout.flush()
    finally:
        lst.stop()
    return outcome.EXIT_OK


def cmd_worker(a: argparse.Namespace) -> int:
    from dicomlab.events import EventLog
    from dicomlab.registry import Registry, connect

    from . import worker

    env = env_config()
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

    env = env_config()
    link = link_of(a, env) if (a.port or a.host) else None
    return bench.run(a.slices, a.rows, a.cols, link, a.storescu)


def cmd_conformance(a: argparse.Namespace) -> int:
    """The simulator's own conformance statement (no network), as text or JSON."""
    from dicomlab.conformance import simulator_statement

    env = env_config()
    st = simulator_statement(env.sim_ae_title, env.sim_port)
    if a.json:
        print(json.dumps(st, indent=2))
        return outcome.EXIT_OK
    say(st["title"])
    say(f"  roles: {', '.join(st['application_entity']['roles'])}; C-ECHO answered on port {env.sim_port} (worker)")
    for sc in st["sop_classes"]:
        say(f"  {sc['name']} as {sc['role']} ({sc['service']}): "
             + ", ".join(t["name"] for t in sc["transfer_syntaxes"]))
    say(f"  {st['proposal']}")
    say("  on request:")
    for opt in st["on_request"]["transfer_syntaxes"]:
        say(f"    {opt['option']:<32} {opt['name']}" + ("" if opt["encodable"] else " (proposed, not encodable)"))
    for opt in st["on_request"]["sop_classes"]:
        say(f"    {opt['option']:<32} {opt['name']}" + (f" ({opt['note']})" if opt["note"] else ""))
    return outcome.EXIT_OK


# -- parser: one function per sub-command ------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ct-simulator", description="DICOM Lab's CT modality: generates CT studies "
                                "and sends them to a PACS, misconfigured on demand.",
                                epilog=outcome.EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show pynetdicom's own log")
    sub = p.add_subparsers(dest="command", required=True)
    _parser_generate(sub)
    _parser_echo(sub)
    _parser_send(sub)
    _parser_listen(sub)
    _parser_worker(sub)

    from .qr import add_parsers as add_qr  # find | move | get

    add_qr(sub, add_link, lambda a: link_of(a, env_config()))
    _parser_bench(sub)
    _parser_conformance(sub)

    from .scenarios.cli import add_parser as add_scenarios

    add_scenarios(sub)
    return p


def _parser_generate(sub: Any) -> None:
    g = sub.add_parser("generate", help="write Part 10 files to a folder")
    add_plan(g)
    g.add_argument("--out", required=True, help="folder to write to (study01/series01/CT00001.dcm ...)")
    g.add_argument("--transfer-syntax", help="explicit (default), implicit, deflated, rle, j2k")
    g.add_argument("--progress", choices=["auto", "always", "never"], default="auto")
    g.set_defaults(func=cmd_generate)


def _parser_echo(sub: Any) -> None:
    e = sub.add_parser("echo", help="C-ECHO the PACS", epilog=outcome.EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_link(e)
    add_ladder(e)
    e.set_defaults(func=cmd_echo)


def _parser_send(sub: Any) -> None:
    s = sub.add_parser("send", help="generate and C-STORE studies to the PACS", epilog=outcome.EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_plan(s)
    add_link(s)
    add_ladder(s)
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
    _send_commit_options(s)


def _send_commit_options(s: argparse.ArgumentParser) -> None:
    """``send --commit`` and its report listener."""
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


def _parser_listen(sub: Any) -> None:
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


def _parser_worker(sub: Any) -> None:
    w = sub.add_parser("worker", help="take send requests from Redis; answer C-ECHO on SIM_PORT")
    w.add_argument("--bind", default="0.0.0.0", help="address for the C-ECHO listener (default all)")
    w.add_argument("--echo-port", type=int, help="port for the C-ECHO listener (default SIM_PORT)")
    w.add_argument("--max-jobs", type=int, help="stop after this many jobs (tests)")
    w.set_defaults(func=cmd_worker)


def _parser_bench(sub: Any) -> None:
    b = sub.add_parser("bench", help="slices/s generated, and sent when --host/--port is given")
    b.add_argument("--slices", type=int, default=300)
    b.add_argument("--rows", type=int, default=512)
    b.add_argument("--cols", type=int, default=512)
    b.add_argument("--storescu", action="store_true", help="also time DCMTK storescu on the same files")
    add_link(b)
    b.set_defaults(func=cmd_bench)


def _parser_conformance(sub: Any) -> None:
    c = sub.add_parser("conformance", help="print the simulator's conformance statement (what it proposes)")
    c.add_argument("--json", action="store_true", help="as JSON (the admin API serves the same)")
    c.set_defaults(func=cmd_conformance)


def main(args: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(args)
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    quiet_pynetdicom(a.debug)
    try:
        return int(a.func(a))
    except (ValueError, LabError) as exc:
        say(f"FAILED: {exc}", file=sys.stderr)
        return outcome.EXIT_ERROR
