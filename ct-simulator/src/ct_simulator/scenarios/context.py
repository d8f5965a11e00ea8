"""What a scenario run knows about the lab (``LabContext``), the PACS's stdout (``PacsLog``),
and what one scenario's run comes to (``Result``, or ``Skip`` with the reason)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any

from .adminapi import AdminApi
from .catalogue import Scenario
from .registryctl import RegistryControl

DEFAULT_AET = "LABCT01"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class Result:
    scenario: Scenario
    status: str = "pass"  # pass | fail | skip | error
    observed_modality: str = ""
    observed_pacs: str = ""
    mismatches: list[str] = field(default_factory=list)
    reason: str = ""  # skip / error reason
    elapsed: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "pass" or (self.status == "skip" and not IN_CI)


class PacsLog:
    """The PACS's stdout event lines: a file (local runtime, tests) or ``compose logs pacs``."""

    TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) +[A-Z]+ +(\S+)")

    def __init__(self, path: str | None = None, cmd: list[str] | None = None) -> None:
        self.path, self.cmd = path, cmd

    def describe(self) -> str:
        return self.path or " ".join(self.cmd or []) or "none"

    def text(self) -> str:
        if self.path:
            try:
                with open(self.path, errors="replace") as fh:
                    return fh.read()
            except OSError:
                return ""
        if self.cmd:
            r = subprocess.run(self.cmd, capture_output=True, text=True, timeout=60)
            return r.stdout
        return ""

    def lines(self, after: str) -> list[tuple[str, str]]:
        """(event type, line) of the PACS's event lines at or after the UTC time ``after``."""
        out = []
        for line in self.text().splitlines():
            m = self.TIME.search(line)
            if m and m.group(2) == "pacs" and m.group(1) >= after:
                out.append((m.group(3), line))
        return out


@dataclass
class LabContext:
    api: AdminApi
    pacs_host: str
    pacs_port: int  # where the modality reaches the PACS from this host
    direct_port: bool  # pacs_port is the listener's own port (not a published mapping)
    calling: str = DEFAULT_AET
    peer: str = ""  # the address the PACS sees this host's modality come from
    registry: RegistryControl = field(default_factory=RegistryControl)
    netns_reason: str | None = None  # why namespaces cannot be used, or None
    # The Compose runtime's "modality elsewhere": makes a second simulator container (container.py)
    # where the local runtime makes a network namespace; None: network namespaces.
    elsewhere: Any = None
    drop_reason: str | None = None  # why the "elsewhere" cannot drop packets, or None
    event_timeout: float = 10.0
    pacs_log: PacsLog | None = None  # the PACS's stdout, for events it could not store
    pacs_tls_port: int | None = None  # where the modality reaches the PACS's DICOM TLS port from this host
    tls_dir: str | None = None  # the lab CA's folder (ca.pem, ca.key): signs what the admin API will not
    tls_reason: str | None = None  # why TLS scenarios cannot run here, or None
    workdir: str = ""  # a private folder for the TLS files of the scenarios


class Skip(Exception):
    pass
