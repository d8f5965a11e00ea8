"""The one table: rich on the terminal, markdown and JSON in build/bench/."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _value(r: dict[str, Any]) -> str:
    if r["value"] is None:
        return "—"
    return f"{r['value']:,.0f} {r['unit']}"


def _ratio(r: dict[str, Any]) -> str:
    return "" if r["ratio"] is None else f"{r['ratio']:.2f}×"


def _met(r: dict[str, Any]) -> str:
    return {True: "yes", False: "NO", None: ""}[r["met"]]


def _detail(r: dict[str, Any]) -> str:
    return "; ".join(x for x in (r["detail"], r["note"]) if x)


def _title(env: dict[str, Any]) -> str:
    return (f"DICOM Lab bench — {env['slices']} CT slices {env['size']}, {env['modalities']}×"
            f"{env['images_per_modality']} concurrent, accept {env['accept_seconds']:g} s × {env['accept_clients']} "
            f"clients, median of {env['repeat']}; {env['cpus']} CPUs, commit {env['commit']}")


HEAD = ["workload", "subject", "result", "vs DCMTK", "target", "met", "detail"]


def _cells(r: dict[str, Any]) -> list[str]:
    return [r["workload"], r["subject"], _value(r), _ratio(r), r["target"], _met(r), _detail(r)]


def markdown(data: dict[str, Any]) -> str:
    lines = [f"# {_title(data['environment'])}", "", "| " + " | ".join(HEAD) + " |",
             "|" + "---|" * len(HEAD)]
    for r in data["rows"]:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
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
        table.add_column(h, justify="right" if h in ("result", "vs DCMTK") else "left",
                         overflow="fold", no_wrap=h in ("result", "vs DCMTK", "met"))
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
