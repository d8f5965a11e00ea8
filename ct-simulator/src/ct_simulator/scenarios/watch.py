"""What the scenario runner watches on the PACS's side: where the PACS sees this host's
modality (``calibrate``), the *marker* C-ECHO that closes a scenario's window of events,
the listener moving to a new port, and the PACS's own word that its registry is down."""

from __future__ import annotations

import socket
import time
from typing import Any

from dicomlab.waiting import poll_until, wait_until

from . import probe
from .context import LabContext

PROBE_AET = "LABPROBE"
MARKER_AET = "LABMARKER"


class LabWatch:
    """The PACS as the runner watches it (``Runner`` builds on it)."""

    def __init__(self, ctx: LabContext, log: Any = None) -> None:
        self.ctx = ctx
        self.log = log or (lambda msg: None)

    # -- preparation -----------------------------------------------------------------
    def calibrate(self) -> None:
        """Find the address the PACS sees us at: a probe association, and its rejection event."""
        api = self.ctx.api
        for title in (PROBE_AET, MARKER_AET):
            if api.node(title) is not None:
                raise RuntimeError(f"a node {title!r} is registered: the runner uses that AE title as an "
                                   "unregistered probe; remove the node first")
        since = api.last_event_id()
        scp = api.scp()
        obs = probe.run({"kind": "echo", "host": self.ctx.pacs_host, "port": self.ctx.pacs_port,
                         "calling_aet": PROBE_AET, "called_aet": scp["ae_title"], "timeout": 10})
        if obs["kind"] != "rejected":
            raise RuntimeError(f"the PACS at {self.ctx.pacs_host}:{self.ctx.pacs_port} did not reject an "
                               f"unregistered probe as it should: {probe.describe(obs)}")
        ev = self._wait_for(since, lambda e: e["type"] == "association-rejected" and e["calling_aet"] == PROBE_AET)
        if ev is None:
            raise RuntimeError("the PACS's rejection of the probe never reached the event stream "
                               "(is the admin API on the same registry as the PACS?)")
        self.ctx.peer = ev["peer"]

    def _wait_for(self, since: str, pred: Any, timeout: float | None = None) -> dict[str, Any] | None:
        return poll_until(lambda: next((e for e in self.ctx.api.events_since(since) if pred(e)), None),
                          timeout or self.ctx.event_timeout, interval=0.1)

    def _marker(self) -> bool:
        """A rejected C-ECHO whose event closes the scenario's window of events."""
        api = self.ctx.api
        since = api.last_event_id()
        scp = api.scp()
        probe.run({"kind": "echo", "host": self.ctx.pacs_host, "port": self.ctx.pacs_port,
                   "calling_aet": MARKER_AET, "called_aet": scp["ae_title"], "timeout": 10})
        return self._wait_for(since, lambda e: e.get("calling_aet") == MARKER_AET
                              and e["type"] == "association-rejected") is not None

    def _wait_listening(self, port: int, old: int | None = None, timeout: float = 15.0,
                        elsewhere: Any = None) -> str | None:
        """Wait until the PACS reports listening on ``port``, then until ``old`` (on this host) refuses
        connections: with several PACS worker processes the others follow the first within their poll
        interval (DESIGN: within 2 s). Returns a mismatch sentence when ``old`` keeps accepting.
        ``elsewhere``: look from there (a container on the lab network) instead of this host."""
        wait_until(lambda: ((self.ctx.api.scp().get("listener") or {}).get("heartbeat") or {}).get("port") == port,
                   timeout, interval=0.1, what=f"the PACS to report listening on port {port}", error=RuntimeError)
        if old is None or not (self.ctx.direct_port or elsewhere is not None):
            return None
        moved = time.monotonic()
        while True:
            if elsewhere is not None:
                if elsewhere.can_reach(elsewhere.host_ip, old, timeout=1) is not None:
                    return None
            else:
                try:
                    with socket.create_connection((self.ctx.pacs_host, old), timeout=1):
                        pass
                except OSError:
                    return None
            if time.monotonic() - moved > 5.0:
                return (f"the PACS still accepts connections on its old port {old} 5 s after reporting it "
                        f"listens on {port} (DESIGN: a port change re-binds within 2 s)")
            time.sleep(0.05)

    def _registry_down_noticed(self, after: str, timeout: float = 15.0) -> bool:
        """Keep the registry down until the PACS itself has said so (its own stdout line), as a real
        outage would: a pause shorter than the PACS's look at its registry ends before it notices."""
        if self.ctx.pacs_log is None:
            return False
        log = self.ctx.pacs_log
        return bool(poll_until(lambda: any(type_.rstrip(":") == "settings-changed" and "(Redis) is unreachable" in line
                                           for type_, line in log.lines(after)), timeout, interval=0.2))
