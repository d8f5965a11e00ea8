"""gunicorn settings for the admin API: gunicorn -c admin-api/gunicorn.conf.py 'admin_api:create_app()'

Worker class: gthread (a pool of OS threads per worker process).

- Every open Server-Sent Events stream is a long request: it waits in a
  blocking Redis XREAD (redis-py) and holds whatever serves it. The sync
  worker would give one stream the whole process; API calls would starve.
- gevent would hold thousands of streams, but only by monkey-patching the
  process, and the echo route runs pynetdicom, which drives each association
  with real threads, blocking sockets and select(); keeping those unpatched
  is simpler to reason about and to debug than cooperative greenlets.
- gthread needs no patching: a stream costs one idle thread (a small stack,
  no CPU) and one Redis connection. A lab has a handful of browser tabs, so
  2 workers x 64 threads is ample. The app caps streams per process at
  SSE_MAX_STREAMS = threads - 8 (a 503 beyond it), so at least 8 threads
  per process always remain for API calls, whatever the number of tabs.
- The gthread main loop keeps answering the arbiter's heartbeat while
  threads sit in long requests, so `timeout` never kills a worker because
  a stream is open; `graceful_timeout` stays short so `make down` does not
  wait on streams that never end.
- The access log leaves out health checks that pass (`GET /api/health`
  answered 2xx): Compose and `make up` probe it every few seconds, and
  `make logs` should show what people and modalities do. A failing
  health check is still logged. Prometheus scrapes of `/metrics` that pass
  are left out the same way.
"""

import os
import shutil
import tempfile
from pathlib import Path

from gunicorn.glogging import Logger

HEALTH_PATH = "/api/health"
METRICS_PATH = "/metrics"

# Prometheus multiprocess mode (admin_api/metrics.py): one folder for every worker, in the
# environment before a worker imports prometheus_client. ADMIN_METRICS_DIR, else a fresh
# folder in the temporary folder (a tmpfs in Compose), removed on exit.
_metrics_dir = os.environ.get("ADMIN_METRICS_DIR") or tempfile.mkdtemp(prefix="dicomlab-admin-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def on_starting(server):
    """Counts of an earlier run are not this run's."""
    Path(_metrics_dir).mkdir(parents=True, exist_ok=True)
    for f in Path(_metrics_dir).glob("*.db"):
        f.unlink(missing_ok=True)


def on_exit(server):
    if not os.environ.get("ADMIN_METRICS_DIR"):
        shutil.rmtree(_metrics_dir, ignore_errors=True)


class QuietHealthLogger(Logger):
    """gunicorn's logger without the access lines of passing health checks."""

    def access(self, resp, req, environ, request_time):
        status = getattr(resp, "status_code", None) or 0
        if environ.get("PATH_INFO") in (HEALTH_PATH, METRICS_PATH) and 200 <= status < 300:
            return
        super().access(resp, req, environ, request_time)


bind = f"0.0.0.0:{os.environ.get('ADMIN_PORT', '8080')}"
worker_class = "gthread"
workers = int(os.environ.get("ADMIN_API_WORKERS", "2"))
threads = int(os.environ.get("ADMIN_API_THREADS", "64"))
# Streams per process; the rest of the threads are kept for API requests.
raw_env = [f"ADMIN_API_SSE_MAX_STREAMS={max(1, threads - 8)}"]
timeout = 30
graceful_timeout = 5
keepalive = 5
accesslog = "-"
logger_class = QuietHealthLogger
errorlog = "-"
loglevel = os.environ.get("ADMIN_API_LOG_LEVEL", "info")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
# Short-lived JSON requests: no body is bigger than MAX_CONTENT_LENGTH anyway.
limit_request_line = 8190
