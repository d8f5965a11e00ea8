"""The PACS tests that `make test-stock` runs a second time, on stock pynetdicom loops.

Files matching ENGINE_FILES (or marking themselves with ``pytestmark = pytest.mark.engines``)
get the ``engines`` marker: the policy, store, fault and hostile-peer tests, and the ones
added under these names later. ``make test-stock`` runs ``pytest -m engines tests/pacs``
with ``PACS_FASTPATH=0`` in the environment, which every PACS process a test starts
(tests/lab.py PacsProcess) inherits.
"""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import pytest

# Not here: the fuzz smoke and regression tests and test_dataphase's engine cases choose their
# engines themselves (socket, loops and stock, each with its own expectations), and
# test_wire.py tests the socket data phase itself (wire.py's words), which stock mode does not run.
ENGINE_FILES = ("test_policy.py", "test_store.py", "test_faults.py", "test_gate*.py",
                "test_dataphase*.py", "test_untrusted_text.py", "test_commitment.py", "test_qr.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(fnmatch(Path(str(item.fspath)).name, pattern) for pattern in ENGINE_FILES):
            item.add_marker(pytest.mark.engines)

