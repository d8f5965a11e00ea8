"""Container health check: a C-ECHO to the local listener. Any A-ASSOCIATE
answer (accepted *or* rejected) means the PACS is alive and deciding; no
answer (refused, timeout, abort) means it is not. Exit 0 healthy, 1 not."""

from __future__ import annotations

import os
import sys

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

# The calling AE title of the probe. The PACS refuses it like any unknown node, but
# does not log the refusal (unless verbose) when it comes from the loopback address.
HEALTHCHECK_AET = "HEALTHCHECK"


def main() -> int:
    port = int(os.environ.get("PACS_HEALTH_PORT") or 0)
    if not port:
        try:
            from dicomlab.registry import Registry, connect

            hb = Registry(connect(os.environ["REDIS_URL"])).get_heartbeat()
            port = int(hb["port"]) if hb else 0
        except Exception:
            port = 0
    port = port or int(os.environ.get("PACS_PORT", "11112"))
    ae = AE(ae_title=HEALTHCHECK_AET)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=os.environ.get("PACS_AE_TITLE", "PACS"))
    alive = assoc.is_established or assoc.is_rejected
    if assoc.is_established:
        assoc.release()
    print(f"pacs on port {port}: {'alive' if alive else 'not answering'}")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
