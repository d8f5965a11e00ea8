"""DICOM Lab PACS receiver: a Storage and Verification SCP that decides every
association from the registry (Redis) and stores instances durably.

- ``policy``      the association decision, in the order of DESIGN.md's table
- ``contexts``    presentation contexts a node may have (per services, cached)
- ``storage``     durable C-STORE: temporary file, fsync, rename, then Success
- ``gate``        one selector thread per process holds connections until their
                  A-ASSOCIATE-RQ is complete: header checks, deadline, pending caps
- ``notes``       the gate's close events, aggregated per address and 10 s
- ``counters``    counts per key shared by every listener process (pending per
                  address, associations per node)
- ``server``      the listener: pynetdicom server, live settings, event handlers,
                  refusal modes, fault injection, shutdown
- ``fastpath``    pynetdicom's per-association loops woken by their queues, threads reused
- ``wire``        the data phase of plain associations, served on the socket
- ``supervisor``  several listener processes on one port
- ``cli``         the command line (``dicomlab-pacs``, ``python -m pacs``)
- ``healthcheck`` a C-ECHO to the listener that counts a rejection as alive
"""

__version__ = "0.1.0"
