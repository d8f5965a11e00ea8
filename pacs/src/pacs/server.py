"""The PACS listener, by its old address: ``pacs.server`` re-exports what used to live here.

The listener was one module; it is now the rooms that say what they hold (pacs/README.md):
listener.py (``Pacs``: life cycle), transport.py (socket, servers, hand-over),
associations.py, echostore.py (event handlers), faults.py (refusal modes, fault
injection) and session.py (``Session``). New code imports from those.
"""

from __future__ import annotations

from .faults import AUTHORIZATION_REASONS
from .listener import Pacs
from .session import Session
from .transport import FastSocket, LabRequestHandler, LabServer, SharedPortServer, _inherited_server_class

__all__ = ["AUTHORIZATION_REASONS", "FastSocket", "LabRequestHandler", "LabServer", "Pacs", "Session",
           "SharedPortServer", "_inherited_server_class"]
