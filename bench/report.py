"""The one table: rich on the terminal, markdown and JSON in build/bench/."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import hostile
from .receivers import ROOT, tool

if TYPE_CHECKING:
    from .run import Bench


def _value(r: dict[str, Any]) -> str:
    if r["value"] is None:
        return "—"
    v = r["value"]
    if abs(v) >= 10 or v == 0:
        return f"{v:,.0f} {r['unit']}"
    return f"{v:.1f} {r['unit']}" if r["unit"] == "MiB" or abs(v) >= 1 else f"{v:.2g} {r['unit']}"


def _ratio(r: dict[str, Any]) -> str:
    return "" if r["ratio"] is None else f"{r['ratio']:.2f}× {r.get('ratio_to', 'DCMTK')}"


def _met(r: dict[str, Any]) -> str:
    return {True: "yes", False: "NO", None: ""}[r["met"]]


def _detail(r: dict[str, Any]) -> str:
    return "; ".join(x for x in (r["detail"], r["note"]) if x)


def _title(env: dict[str, Any]) -> str:
    ran = set(str(env.get("workloads", "")).split(","))
    parts = []
    if ran & {"single", "concurrent", "sim", "profile", "tls"}:
        parts.append(f"{env['slices']} CT slices {env['size']}, {env['modalities']}×{env['images_per_modality']} "
                     f"concurrent, median of {env['repeat']}")
    if ran & {"accept", "halfopen", "tls"}:
        parts.append(f"accept {env['accept_seconds']:g} s × {env['accept_clients']} clients")
    if ran & set(hostile.WORKLOADS):
        parts.append(f"{env['halfopen']} half-open from {env['halfopen_sources']} address(es), {env['claims']} × "
                     f"{env['claim_mib']} MiB claims, {env['big_instance_mib']} MiB instance")
    return f"DICOM Lab bench — {'; '.join(parts)}; {env['cpus']} CPUs, commit {env['commit']}"


HEAD = ["workload", "subject", "result", "ratio", "target", "met", "detail"]


def _cells(r: dict[str, Any]) -> list[str]:
    return [r["workload"], r["subject"], _value(r), _ratio(r), r["target"], _met(r), _detail(r)]


def markdown(data: dict[str, Any]) -> str:
    lines = [f"# {_title(data['environment'])}", "", "| " + " | ".join(HEAD) + " |",
             "|" + "---|" * len(HEAD)]
    for r in data["rows"]:
        lines.append("| " + " | ".join(" ".join(c.replace("|", "\\|").split()) for c in _cells(r)) + " |")
    for prof in data.get("profiles") or []:
        lines += ["", f"## PACS profile: {prof['workload']}"]
        if prof.get("skipped"):
            lines += ["", f"skipped: {prof['skipped']}"]
            continue
        lines += ["", f"py-spy, {prof['samples']} samples at {prof['rate_hz']} Hz, idle threads excluded; "
                  f"under the profiler: {prof['detail']}; flame graph {Path(prof['svg']).name}, "
                  f"stacks {Path(prof['raw']).name}"]
        for title, key in (("functions by self time", "self"), ("functions by total time (on the stack)", "total"),
                           ("source lines by self time", "lines")):
            lines += ["", f"{title}:", "", "| function | self % | total % |", "|---|---|---|"]
            for h in prof[key]:
                lines.append(f"| {h['function']} | {h['self_pct']:.1f} | {h['total_pct']:.1f} |")
    env = data["environment"]
    lines += ["", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items() if v not in ("", None, {})), ""]
    return "\n".join(lines)


def print_rich(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a log or a pipe: wide enough that the table stays one line a row
        console = Console(width=170)
    table = Table(title=_title(data["environment"]), show_lines=False, title_justify="left")
    for h in HEAD:
        table.add_column(h, justify="right" if h in ("result", "ratio") else "left",
                         overflow="fold", no_wrap=h in ("result", "ratio", "met"))
    last = None
    for r in data["rows"]:
        if last is not None and r["workload"] != last:
            table.add_section()
        last = r["workload"]
        cells = _cells(r)
        cells[5] = {"yes": "[green]yes[/]", "NO": "[red]NO[/]"}.get(cells[5], cells[5])
        table.add_row(*cells)
    console.print(table)
    for prof in data.get("profiles") or []:
        if prof.get("skipped"):
            console.print(f"PACS profile ({prof['workload']}) skipped: {prof['skipped']}")
            continue
        t = Table(title=f"PACS hot spots, {prof['workload']} (py-spy, {prof['samples']} samples; under the profiler: "
                  f"{prof['detail']})", title_justify="left")
        t.add_column("function (by self time)")
        t.add_column("self %", justify="right")
        t.add_column("total %", justify="right")
        t.add_column("source line (by self time)")
        t.add_column("self %", justify="right")
        for i in range(max(len(prof["self"]), len(prof["lines"]))):
            h = prof["self"][i] if i < len(prof["self"]) else None
            ln = prof["lines"][i] if i < len(prof["lines"]) else None
            t.add_row(h["function"] if h else "", f"{h['self_pct']:.1f}" if h else "",
                      f"{h['total_pct']:.1f}" if h else "", ln["function"] if ln else "",
                      f"{ln['self_pct']:.1f}" if ln else "")
        console.print(t)
        console.print(f"flame graph: {prof['svg']}; raw stacks: {prof['raw']}")


def environment(bench: "Bench") -> dict[str, object]:
    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
            return out.strip().splitlines()[0] if out.strip() else ""
        except (OSError, subprocess.SubprocessError):
            return ""

    import pydicom
    import pynetdicom

    commit = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "pacs", "common", "ct-simulator"],
                           capture_output=True, text=True).stdout.split("\n")
    changed = sorted({line[3:].split("/")[0] for line in dirty if line.strip()})
    if commit and changed:
        commit += f" + uncommitted changes in {', '.join(changed)}"
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": platform.node(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "pynetdicom": pynetdicom.__version__,
            "pydicom": pydicom.__version__, "dcmtk": version([tool("storescu"), "--version"]),
            "orthanc": "" if "orthanc" in bench.skipped else version([tool("Orthanc"), "--version"]),
            "commit": commit, "slices": bench.ns.slices, "size": f"{bench.ns.rows}x{bench.ns.cols}",
            "modalities": bench.ns.modalities, "images_per_modality": bench.ns.images_per_modality,
            "accept_seconds": bench.ns.accept_seconds, "accept_clients": bench.ns.accept_clients,
            "repeat": bench.ns.repeat, "pacs_env": bench.pacs_env,
            "pacs_workers": bench.pacs_env.get("PACS_WORKERS") or os.environ.get("PACS_WORKERS")
            or "the PACS's default", "workloads": ",".join(bench.ns.workloads), **hostile.environment(bench.ns)}
