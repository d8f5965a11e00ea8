"""The names of event types and reasons (DESIGN.md, "Events and logs"): what the stream,
the page, the tests and the scenario catalogue match on. ``dicomlab.events`` re-exports them,
so ``events.STORE_RECEIVED`` and ``from dicomlab.events import STORE_RECEIVED`` both work."""

# Event types (DESIGN.md, "Events and logs")
ASSOCIATION_REQUESTED = "association-requested"
ASSOCIATION_ACCEPTED = "association-accepted"
ASSOCIATION_REJECTED = "association-rejected"
ASSOCIATION_RELEASED = "association-released"
ASSOCIATION_ABORTED = "association-aborted"
CONTEXT_REJECTED = "context-rejected"
STORE_RECEIVED = "store-received"
STORE_FAILED = "store-failed"
STORE_REPLACED = "store-replaced"
ECHO_RECEIVED = "echo-received"
ECHO_SENT = "echo-sent"
SETTINGS_CHANGED = "settings-changed"
NODE_ADDED = "node-added"
NODE_CHANGED = "node-changed"
NODE_REMOVED = "node-removed"
LISTENER_STARTED = "listener-started"
LISTENER_STOPPED = "listener-stopped"
WORKER_EXITED = "worker-exited"  # a listener process died and was restarted
STORAGE_RECONCILED = "storage-reconciled"  # the PACS's start-up pass over storage against the index
PDU = "pdu"  # verbose mode only
SEND_STARTED = "send-started"
SEND_PROGRESS = "send-progress"
SEND_FINISHED = "send-finished"
SEND_FAILED = "send-failed"
# Storage Commitment (second stage): the N-ACTION answered, each delivery attempt of the report
COMMITMENT_REQUESTED = "commitment-requested"  # N-ACTION answered; the request is kept in Redis
COMMITMENT_REPORTED = "commitment-reported"  # the N-EVENT-REPORT was delivered and answered Success
COMMITMENT_FAILED = "commitment-failed"  # one attempt failed (reason: why), or the last one (outcome failed)
# Query/Retrieve (the PACS as SCP): one event per C-FIND, per C-MOVE / C-GET (its final status
# and sub-operation counts), and one per failure of a retrieve (its cause in words).
FIND_ANSWERED = "find-answered"
MOVE_FINISHED = "move-finished"
GET_FINISHED = "get-finished"
RETRIEVE_FAILED = "retrieve-failed"

# Event reasons of the port limits (second stage): the association-rejected /
# association-aborted events, and the connection events before any association.
REASON_PDU_INVALID = "pdu-invalid"  # a PDU over its cap, of an unknown type, or malformed: A-ABORT, close
REASON_REQUEST_TIMEOUT = "request-timeout"  # no complete A-ASSOCIATE-RQ within assoc_request_timeout
REASON_TOO_MANY_PENDING = "too-many-pending"  # over max_pending_connections / _per_address (aggregated per 10 s)
REASON_INSTANCE_TOO_LARGE = "instance-too-large"  # a dataset over max_instance_bytes: A-ABORT
REASON_DIMSE_INVALID = "dimse-invalid"  # a command set that cannot be decoded, lacks a field, or is unsupported
REASON_INTERNAL_ERROR = "internal-error"  # an exception inside an association: A-ABORT
# DICOM TLS (second stage, "DICOM TLS"; README "DICOM TLS"): connection-closed events before any
# association, and association-rejected events (1/1/3) of the per-node TLS policy.
REASON_TLS_ON_PLAIN_PORT = "tls-on-plain-port"  # a TLS ClientHello on the plain port: closed
REASON_PLAIN_ON_TLS_PORT = "plain-on-tls-port"  # a plain PDU (or anything not TLS) on the TLS port: closed
REASON_TLS_HANDSHAKE_FAILED = "tls-handshake-failed"  # detail.cause names which (dicomlab.tlswords)
REASON_TLS_UNAVAILABLE = "tls-unavailable"  # the PACS has no usable certificate: TLS connections closed
REASON_TLS_REQUIRED = "tls-required"  # a node with tls required came to the plain port
REASON_TLS_NOT_ALLOWED = "tls-not-allowed"  # a node with tls off came to the TLS port
REASON_TLS_CLIENT_CERTIFICATE_MISSING = "tls-client-certificate-missing"  # client_certificate required, none sent
REASON_TLS_CLIENT_IDENTITY = "tls-client-identity-mismatch"  # the certificate's CN is not the calling AE title
CONNECTION_CLOSED = "connection-closed"  # a connection closed before it became an association
# Reasons of commitment-failed besides dicomlab.outbound's kinds (connection-refused, timeout,
# unreachable, unresolved, rejected, aborted, tls-handshake-failed):
REASON_REPORT_REFUSED = "report-refused"  # the node answered the N-EVENT-REPORT with a failure status
REASON_REPORT_UNANSWERED = "report-unanswered"  # no N-EVENT-REPORT-RSP (association aborted or timed out)
REASON_CONTEXT_REFUSED = "context-refused"  # the node did not accept Storage Commitment (or our SCP role)
REASON_NODE_UNKNOWN = "node-unknown"  # the node was removed before its report could be delivered
REASON_COMMITMENT_INVALID = "commitment-invalid"  # an N-ACTION the PACS cannot take (action type, dataset)
