"""The table a person reads (rich) and the JUnit XML a CI pipeline reads."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import IO

from .catalogue import Scenario
from .context import IN_CI, Result

STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold red", "skip": "yellow"}


def _console(out: IO[str] | None = None):  # type: ignore[no-untyped-def]
    from rich.console import Console

    out = out or sys.stdout
    width = None if out.isatty() else 220
    return Console(file=out, width=width, highlight=False, soft_wrap=False)


def print_list(scenarios: list[Scenario], out: IO[str] | None = None) -> None:
    from rich.table import Table

    t = Table(title="DICOM Lab misconfiguration catalogue", show_lines=False)
    for col in ("scenario", "side", "what is wrong", "expected (modality | PACS)"):
        t.add_column(col, overflow="fold")
    for s in scenarios:
        extra = " [netns]" if s.needs_netns else (" [registry]" if s.needs_registry_control else "")
        t.add_row(s.name + extra, s.side, s.wrong, f"{s.expected_modality()} | {s.expected_pacs()}")
    _console(out).print(t)


def print_results(results: list[Result], out: IO[str] | None = None) -> None:
    from rich.table import Table

    t = Table(title="DICOM Lab misconfiguration scenarios: expected vs observed", show_lines=True)
    t.add_column("scenario", overflow="fold", max_width=32)
    t.add_column("expected", overflow="fold", max_width=48)
    t.add_column("observed", overflow="fold", max_width=70)
    t.add_column("result", no_wrap=True)
    t.add_column("hint", overflow="fold", max_width=52)
    for r in results:
        sc = r.scenario
        expected = f"modality: {sc.expected_modality()}\nPACS: {sc.expected_pacs()}"
        if r.status in ("skip", "error"):
            observed = f"{r.status}: {r.reason}"
        else:
            observed = f"modality: {r.observed_modality}\nPACS: {r.observed_pacs}"
            if r.mismatches:
                observed += "\nMISMATCH: " + "; ".join(r.mismatches)
        label = "PASS" if r.status == "pass" else ("SKIP" if r.status == "skip" else r.status.upper())
        if r.status == "skip" and IN_CI:
            label = "FAIL (skip in CI)"
        t.add_row(sc.name, expected, observed, f"[{STYLE[r.status]}]{label}[/] {r.elapsed:.1f}s", sc.hint)
    con = _console(out)
    con.print(t)
    counts = {k: sum(1 for r in results if r.status == k) for k in ("pass", "fail", "error", "skip")}
    verdict = "all as expected" if all(r.ok for r in results) else "MISMATCH"
    con.print(f"{len(results)} scenarios: {counts['pass']} passed, {counts['fail']} failed, "
              f"{counts['error']} errors, {counts['skip']} skipped -- {verdict}")


def write_junit(results: list[Result], path: str | Path) -> None:
    suite = ET.Element("testsuite", name="dicomlab-scenarios", tests=str(len(results)),
                       failures=str(sum(1 for r in results if r.status == "fail" or (r.status == "skip" and IN_CI))),
                       errors=str(sum(1 for r in results if r.status == "error")),
                       skipped=str(sum(1 for r in results if r.status == "skip" and not IN_CI)),
                       time=f"{sum(r.elapsed for r in results):.3f}")
    for r in results:
        sc = r.scenario
        case = ET.SubElement(suite, "testcase", classname=f"scenarios.{sc.side}", name=sc.name,
                             time=f"{r.elapsed:.3f}")
        expected = f"modality: {sc.expected_modality()}; PACS: {sc.expected_pacs()}"
        observed = f"modality: {r.observed_modality}; PACS: {r.observed_pacs}"
        if r.status == "fail":
            f = ET.SubElement(case, "failure", message="; ".join(r.mismatches), type="mismatch")
            f.text = f"expected: {expected}\nobserved: {observed}\nhint: {sc.hint}"
        elif r.status == "error":
            ET.SubElement(case, "error", message=r.reason, type="error").text = r.reason
        elif r.status == "skip":
            if IN_CI:
                ET.SubElement(case, "failure", message=r.reason, type="skipped-in-ci").text = r.reason
            else:
                ET.SubElement(case, "skipped", message=r.reason)
        out = ET.SubElement(case, "system-out")
        out.text = f"{sc.title}\nwrong: {sc.wrong} ({sc.side})\nexpected: {expected}\nobserved: {observed}\nhint: {sc.hint}"
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(p, encoding="utf-8", xml_declaration=True)
