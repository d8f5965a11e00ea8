"""The lab fixture of the scenario tests (one per module: the catalogue runs against it)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from scenario_lab import AdminServer, Lab, PacsOnAllAddresses

from lab import RedisServer


@pytest.fixture(scope="module")
def lab():
    workdir = Path(tempfile.mkdtemp(prefix="lab-scenarios-"))
    redis = RedisServer().start()
    pacs = admin = None
    try:
        pacs = PacsOnAllAddresses(redis.url, workdir / "storage").start()
        admin = AdminServer(redis.url, tls_dir=pacs.tls_dir)
        yield Lab(redis, pacs, admin, workdir)
    finally:
        if admin is not None:
            admin.stop()
        if pacs is not None:
            pacs.stop()
        redis.stop()
