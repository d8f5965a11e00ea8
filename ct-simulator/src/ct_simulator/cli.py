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

from dicomlab.dicom import (
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
)
from dicomlab.errors import LabError
from dicomlab.settings import EnvConfig
from dicomlab.text import safe_text

from . import outcome
from .iod import StudyPlan, iter_instances, write_part10
from .network import Link, quiet_pynetdicom
from .outcome import Problem
from .sender import EchoReport, SendOptions, SendReport, echo, send
from .syntaxes import DEFAULT_PROPOSAL, encode_for, resolve

SOP_CLASSES = {"ct": CT_IMAGE_STORAGE, "enhanced-ct": ENHANCED_CT_IMAGE_STORAGE, "mr": MR_IMAGE_STORAGE,
               "sc": SECONDARY_CAPTURE_IMAGE_STORAGE}


def _env() -> EnvConfig:
    return EnvConfig.from_env()


def _listener_defaults(env: EnvConfig) -> tuple[str, int]:
    """The PACS's AE title and port: Redis's listener settings when REDIS_URL answers, else the env seeds."""
    if env.redis_url:
        try:
            from dicomlab.registry import Registry, connect

            client = connect(env.redis_url, timeout=1.0)
            try:
                listener = Registry(client).get_listener()
                return listener.ae_title, listener.port
            finally:
                client.close()
        except LabError:
            pass
    return env.pacs_ae_title, env.pacs_port


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
    called, port = (a.called_aet, a.port)
    if called is None or port is None:
        d_called, d_port = _listener_defaults(env)
        called = d_called if called is None else called
        port = d_port if port is None else port
    return Link(host=a.host or env.pacs_host, port=port, calling_aet=a.calling_aet or env.sim_ae_title,
                called_aet=called, connect_timeout=a.timeout, acse_timeout=a.timeout, dimse_timeout=a.dimse_timeout)


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
        _say(f"C-ECHO {link.calling_aet} -> {link.called_aet}@{link.peer}: Success ({rep.elapsed_ms:.0f} ms).")
    else:
        _print_problem(rep.problem, sys.stdout)


def cmd_echo(a: argparse.Namespace) -> int:
    env = _env()
    link = _link(a, env)
    rep = echo(link)
    _print_echo(link, rep)
    return rep.exit_code


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
    _say(f"{link.calling_aet} -> {link.called_aet}@{link.peer}: {rep.sent} of {rep.total} CT images sent, "
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
    plan = _plan(a, env.sim_ae_title)
    _check_plan(plan)
    syntaxes = tuple(resolve(t) for t in a.transfer_syntax) if a.transfer_syntax else DEFAULT_PROPOSAL
    options = SendOptions(transfer_syntaxes=syntaxes, associations=max(1, a.associations),
                          abort_after=a.abort_after, delay=max(0.0, a.delay), record=a.report_json is not None)
    bar = _bar(plan.total, a.progress, f"{link.calling_aet} -> {link.called_aet}")

    def progress(done: int, failed: int) -> None:
        if bar:
            bar.update(done - bar.n)
            if failed:
                bar.set_postfix(failed=failed, refresh=False)

    rep = send(plan, link, options, progress)
    if bar:
        bar.close()
    if a.report_json:
        _write_report(Path(a.report_json), {**rep.to_dict(), "seed": plan.seed, "instances": rep.instances})
    if a.json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        _summary(plan, link, rep)
    return rep.exit_code


def _write_report(path: Path, data: dict[str, Any]) -> None:
    """Write the JSON report whole or not at all (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


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
    e.set_defaults(func=cmd_echo)

    s = sub.add_parser("send", help="generate and C-STORE studies to the PACS", epilog=outcome.EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_plan(s)
    _add_link(s)
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
