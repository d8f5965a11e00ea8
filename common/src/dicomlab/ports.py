"""A free TCP port, for the servers that cannot bind port 0 and say which port they got.

Binding port 0 and asking the socket is race-free, and the tests' own servers do it where they
can: the pynetdicom SCPs (``start_server(("127.0.0.1", 0))``, then ``server.server_address``),
the werkzeug servers (``make_server(..., 0, ...)``, then ``server.server_port``), gunicorn
(``--bind 127.0.0.1:0``, then its "Listening at:" line). ``free_port`` (bind port 0 for a
moment, close, hand the number on) is for the rest, which must be told a port:

- redis-server: ``--port 0`` means "no TCP listener", not "any port";
- the PACS: its port is a stored listener setting (1-65535, DESIGN.md) that the registry, the
  nodes' tests and a restart keep; its metrics port (PACS_METRICS_PORT) is read from the
  environment by every worker process;
- DCMTK storescp refuses port 0; Orthanc reads fixed ports from its configuration file;
- the simulator's worker (its echo SCP port) and the lab's own services under ``make up``
  (local runtime), whose ports are printed and written to the state before they start;
- a port on which nothing must listen (a "connection refused" test).

The number can in principle be taken by another process between the close and the server's
bind; the servers that get one start at once, and the tests wait on them with generous deadlines.
Dependency-free: ``scripts/lab.py`` imports it too.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing is bound to on ``host`` right now ("" : on every address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
