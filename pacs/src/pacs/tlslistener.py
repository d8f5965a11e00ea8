"""The DICOM TLS listener beside the plain one: opened, moved and closed at run time
from the listener settings ``tls_enabled`` and ``tls_port``, as the plain port is.

Both listeners are association servers of the same ``Pacs`` (same handlers, same
policy, same gate); the TLS one carries the ``ServerTls`` (tls.py), so the gate does
the handshake before it reads the A-ASSOCIATE-RQ. Moving the port opens the new one
first, then closes the old one; associations already open on the old port run to
their end, as on the plain port. If the new port cannot be opened the TLS listener
stays where it was (or off), with an error event.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dicomlab import events as E
from dicomlab.settings import ListenerSettings

from .tls import ServerTls, expiry_warning


class TlsListener:
    def __init__(self, pacs: Any, folder: str | Path | None) -> None:
        self.pacs = pacs
        self.tls = ServerTls(folder, emit=pacs._listener_event) if folder else None
        self.server: Any = None
        self.port: int | None = None

    def apply(self, settings: ListenerSettings, starting: bool = False) -> str:
        """Follow the settings; at start, the words for the listener-started event."""
        want = settings.tls_port if settings.tls_enabled and self.tls is not None else None
        if want == self.port:
            return "" if want is None or not starting else self._words()
        old = self.port
        if want is None:
            self.close()
            if self.tls is None:
                return "; DICOM TLS off (no TLS folder)"
            if not starting:
                self.pacs._listener_event(
                    E.SETTINGS_CHANGED, f"DICOM TLS listener off (tls_enabled false); port {old} is closed. Nodes "
                    "with tls required cannot associate until it is on again.",
                    detail={"tls_enabled": False, "old_tls_port": old})
            return "; DICOM TLS off (tls_enabled false)"
        assert self.tls is not None
        try:
            server = self.pacs.make_server(want, tls=self.tls)
        except OSError as exc:
            where = f"still listening on {old}" if old else "the TLS listener is off"
            self.pacs._listener_event(
                E.SETTINGS_CHANGED, f"Could not open the DICOM TLS port {want} ({exc.strerror or exc}); {where}. "
                "Fix: choose a free tls_port.", level="error", reason="rebind-failed", detail={"tls_port": want})
            return f"; DICOM TLS port {want} could not be opened ({exc.strerror or exc})"
        previous, self.server, self.port = self.server, server, server.server_address[1]
        if previous is not None:
            previous.shutdown()
        if starting:
            return self._words()
        if old is None:
            self.pacs._listener_event(E.SETTINGS_CHANGED, "DICOM TLS listener on" + self._words()[len("; DICOM TLS"):],
                                      detail={"tls_enabled": True, "tls_port": self.port})
        else:
            self.pacs._listener_event(
                E.SETTINGS_CHANGED, f"DICOM TLS listener moved from port {old} to {self.port}; port {old} is closed. "
                "Modalities using TLS must now send to the new port.", detail={"tls_port": self.port,
                                                                               "old_tls_port": old})
        return ""

    def _words(self) -> str:
        assert self.tls is not None
        ctx = self.tls.context()
        if ctx is None:
            return (f"; DICOM TLS on port {self.port}, but without a usable certificate: every TLS connection is "
                    f"closed ({self.tls.error})")
        until = time.strftime("%Y-%m-%d", time.gmtime(self.tls.not_after))
        warn = expiry_warning(self.tls.not_after)
        return (f"; DICOM TLS on port {self.port} (TLS 1.2+, BCP 195; certificate {self.tls.subject} from the lab CA, "
                f"valid until {until}{'; ' + warn if warn else ''})")

    def close(self) -> None:
        server, self.server, self.port = self.server, None, None
        if server is not None:
            server.shutdown()
