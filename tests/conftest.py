from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the repository root: the fuzzer's wire helpers (fuzz/) and the bench's modules (bench/), which
# some tests import, whichever test runs first (tests/bench alone is not the package bench)
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from lab import PacsProcess, RedisServer  # noqa: E402


@pytest.fixture(autouse=True)
def _pynetdicom_globals_restored():
    """A PACS built in the test process (``pacs.listener.Pacs``) switches pynetdicom's process-wide
    STORE_RECV_CHUNKED_DATASET on (pacs/spooling.py), which changes what a C-STORE handler of the
    simulator gets (``event.encoded_dataset()``) in later tests of the same process; put it back."""
    from pynetdicom import _config

    saved = _config.STORE_RECV_CHUNKED_DATASET
    yield
    _config.STORE_RECV_CHUNKED_DATASET = saved


@pytest.fixture(scope="session")
def redis_server():
    """One real redis-server for the session (tests flush it)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    c = redis_server.client()
    c.flushall()
    c.close()
    return redis_server.url


@pytest.fixture
def registry(redis_url):
    from dicomlab.registry import Registry, connect

    return Registry(connect(redis_url))


@pytest.fixture
def pacs(redis_url, tmp_path):
    """A running PACS process (AE title PACS) with its own storage folder."""
    p = PacsProcess(redis_url, tmp_path / "storage").start()
    yield p
    p.stop()
