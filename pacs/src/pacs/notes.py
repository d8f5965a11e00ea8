"""Events about connections closed before they became associations, aggregated per
source address and reason (gate.py): the first close is reported at once and in full;
the ones after it are counted and reported once per ``WINDOW`` while they go on, so a
flood cannot push the audit trail out of the bounded event stream. A flood from many
addresses is bounded too: beyond ``MAX_SOURCES`` addresses reported in one window, further
addresses are counted together under "other addresses"."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dicomlab import events as E

LOG = logging.getLogger(__name__)

WINDOW = 10.0  # seconds over which closes from one address are counted into one event
MAX_SOURCES = 20  # addresses reported one by one per window; the rest together
OTHERS = "other addresses"


class Notes:
    """Close events, aggregated per (reason, address) and ``WINDOW``."""

    def __init__(self, emit: Callable[..., Any], window: float = WINDOW) -> None:
        self.emit = emit
        self.window = window
        self._open: dict[tuple[str, str, str], list[Any]] = {}  # key -> [window end, count, why, detail]
        self._firsts: list[float] = []  # when a first close of an address was reported, this window

    def add(self, reason: str, peer: str, first: str, why: str, detail: dict[str, Any], now: float,
            kind: str = "") -> None:
        """``first``: the sentence for a first close; ``why``: what the summary says after the count;
        ``kind``: closes of one reason counted apart (a TLS handshake failure's cause)."""
        w = self._open.get((reason, peer, kind))
        if w is None:
            self._firsts = [t for t in self._firsts if t > now - self.window]
            if len(self._firsts) >= MAX_SOURCES:  # too many addresses: count them together
                w = self._open.setdefault((reason, OTHERS, kind), [now + self.window, 0, why, detail])
        if w is not None:
            w[1] += 1
            w[2], w[3] = why, detail
            return
        self._firsts.append(now)
        self._open[(reason, peer, kind)] = [now + self.window, 0, why, detail]
        self._emit(reason, peer, first + f" (further closes of {peer} for this reason are counted and reported "
                   f"every {self.window:.0f} s)", {**detail, "count": 1})

    def flush(self, now: float, force: bool = False) -> None:
        for key, w in list(self._open.items()):
            if w[0] > now and not force:
                continue
            _, count, why, detail = w
            if count:
                reason, peer, _ = key
                more = "" if peer == OTHERS else " more"
                self._emit(reason, "" if peer == OTHERS else peer,
                           f"closed {count}{more} connection{'s' if count != 1 else ''} from {peer} in the last "
                           f"{self.window:.0f} s: {why}", {**detail, "count": count, "window_s": self.window})
                w[0], w[1] = now + self.window, 0
            else:
                del self._open[key]
            if force:
                self._open.pop(key, None)

    def next_due(self) -> float | None:
        return min((w[0] for w in self._open.values()), default=None)

    def _emit(self, reason: str, peer: str, message: str, detail: dict[str, Any]) -> None:
        try:
            self.emit(E.CONNECTION_CLOSED, message[:1].upper() + message[1:], level="warning", outcome="closed",
                      reason=reason, peer=peer, detail=detail)
        except Exception:  # an event must never stop the gate
            LOG.exception("gate event")
