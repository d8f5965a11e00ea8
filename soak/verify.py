"""The end of a soak: every acknowledged instance on disk, byte-equal, and in the study index;
the summary as JSON and Markdown."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from dicomlab import keys

from .modalities import Ledger, Record, dataset_bytes

SHOW = 50  # UIDs listed per kind of loss


def on_disk(storage: Path) -> tuple[dict[str, list[Path]], int]:
    """SOP Instance UID -> the files stored under it; and the count of temporary files left."""
    files: dict[str, list[Path]] = {}
    for path in storage.glob("*/*/*.dcm"):
        files.setdefault(path.stem, []).append(path)
    return files, sum(1 for _ in storage.glob("*/*/.*.tmp"))


def not_indexed(client: redis.Redis, acked: dict[str, Record]) -> list[str]:
    """Acknowledged SOP Instance UIDs missing from their study's ``instances`` set."""
    uids = list(acked)
    missing: list[str] = []
    for start in range(0, len(uids), 1000):
        chunk = uids[start:start + 1000]
        pipe = client.pipeline(transaction=False)
        for uid in chunk:
            pipe.sismember(keys.study_instances(acked[uid].study_uid), uid)
        missing += [uid for uid, member in zip(chunk, pipe.execute(), strict=True) if not member]
    return missing


def check(ledger: Ledger, storage: Path, client: redis.Redis) -> dict[str, Any]:
    acked = {uid: r for uid, r in ledger.records.items() if r.acked}
    files, tmp_files = on_disk(storage)
    missing, different, elsewhere = [], [], []
    for uid, rec in acked.items():
        expected = storage / rec.study_uid / rec.series_uid / f"{uid}.dcm"
        paths = files.get(uid, [])
        if expected not in paths:
            if not paths:
                missing.append(uid)
                continue
            elsewhere.append(uid)  # found by SOP Instance UID under another study/series
        path = expected if expected in paths else paths[0]
        try:
            digest = hashlib.sha256(dataset_bytes(path.read_bytes())).hexdigest()
        except (OSError, ValueError):
            digest = ""
        if digest != rec.sha256:
            different.append(uid)
    unindexed = not_indexed(client, acked)
    unacked_on_disk = sum(1 for uid, r in ledger.records.items() if not r.acked and uid in files)
    return {
        "acknowledged": len(acked),
        "refused": len(ledger.records) - len(acked),
        "sent_instances": len(ledger.records),
        "c_store_answers": dict(sorted(ledger.answers.items())),
        "sender_runs": dict(sorted(ledger.runs.items())),
        "lost_on_disk": len(missing) + len(different),
        "missing_on_disk": len(missing),
        "different_on_disk": len(different),
        "lost_from_index": len(unindexed),
        "missing_on_disk_uids": missing,
        "different_on_disk_uids": different,
        "lost_from_index_uids": unindexed,
        "found_elsewhere": elsewhere[:SHOW],
        "duplicate_files": sum(1 for p in files.values() if len(p) > 1),
        "unacknowledged_but_on_disk": unacked_on_disk,
        "temporary_files_left": tmp_files,
        "sent_with_other_bytes": sum(1 for r in ledger.records.values() if r.conflict),
        "acknowledged_by_modality": dict(Counter(r.modality for r in acked.values())),
    }


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+)Z .*?[Ii]nstance (\S+)")


LEAD = dt.timedelta(seconds=2)  # Redis's everysec AOF can lose answered writes up to ~2 s before a kill


def by_fault(uids: list[str], pacs_log: Path, faults: list[dict[str, Any]]) -> dict[str, int]:
    """Each lost UID under the last fault that started before, or at most ``LEAD`` after, the
    PACS last logged it (for an index loss: "stored on disk; Redis is unreachable ..." when the
    PACS knew; "before the first fault" when no fault had started)."""
    wanted, last_seen = set(uids), {}
    if pacs_log.exists():
        with open(pacs_log, errors="replace") as fh:
            for line in fh:
                m = _LOG_LINE.match(line)
                if m and m.group(2) in wanted:
                    last_seen[m.group(2)] = dt.datetime.fromisoformat(m.group(1) + "+00:00")
    starts = [(dt.datetime.fromisoformat(f["at"]), f"{f['kind']} at {f['t_s']} s") for f in faults]
    out: Counter[str] = Counter()
    for uid in uids:
        seen = last_seen.get(uid)
        if seen is None:
            out["never in the PACS log"] += 1
            continue
        before = [name for at, name in starts if at <= seen + LEAD]
        out[before[-1] if before else "before the first fault"] += 1
    return dict(out)


def write(summary: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    return out / "summary.json", out / "summary.md"


def markdown(s: dict[str, Any]) -> str:
    r = s["result"]
    verdict = "PASS: nothing acknowledged was lost" if s["passed"] else "FAIL: acknowledged instances were lost"
    lines = [
        f"# DICOM Lab crash soak: {verdict}", "",
        f"{s['started_at']}, {s['config']['seconds']} s of load, {s['config']['modalities']} modalities "
        f"({', '.join(s['config']['modality_names'])}), PACS with {s['config']['pacs_workers']} listener workers, "
        f"Redis appendfsync {s['config']['redis_appendfsync']}.", "",
        "| | count |", "|---|---:|",
        f"| acknowledged (0x0000) | {r['acknowledged']} |",
        f"| refused (never acknowledged) | {r['refused']} |",
        f"| lost on disk: missing | {r['missing_on_disk']} |",
        f"| lost on disk: different bytes | {r['different_on_disk']} |",
        f"| lost from the study index | {r['lost_from_index']} |",
        f"| stored but never acknowledged | {r['unacknowledged_but_on_disk']} |",
        f"| temporary files left | {r['temporary_files_left']} |", "",
        "C-STORE answers: " + ", ".join(f"{k} x {v}" for k, v in r["c_store_answers"].items()) + ".", "",
        "Sender runs: " + ", ".join(f"{k} x {v}" for k, v in r["sender_runs"].items()) + ".", "",
        f"## Faults injected ({len(s['faults'])})", "",
        "| t (s) | fault | what happened | back after (s) |", "|---:|---|---|---:|",
    ]
    lines += [f"| {f['t_s']} | {f['kind']} | {f['detail']} | {f['recovered_after_s']} |" for f in s["faults"]]
    lines += ["", "## Recovery", ""] + [f"- {line}" for line in s["recovery"]]
    if r.get("lost_from_index_by_fault"):
        lines += ["", "## Lost from the index, by the fault at the time the PACS last logged the instance", ""]
        lines += [f"- {name}: {n}" for name, n in r["lost_from_index_by_fault"].items()]
    for key, title in (("missing_on_disk_uids", "Missing on disk"), ("different_on_disk_uids", "Different on disk"),
                       ("lost_from_index_uids", "Not in the study index")):
        if r[key]:
            lines += ["", f"## {title} ({len(r[key])}; the first {min(SHOW, len(r[key]))} here, all in "
                      "summary.json)", ""] + [f"- {u}" for u in r[key][:SHOW]]
    if s["problems"]:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in s["problems"]]
    return "\n".join(lines) + "\n"
