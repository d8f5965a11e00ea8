"""scripts/lab.py is an entry point over the package scripts/labctl; it runs where the lab's
packages are not installed (`make down` / `make ps` fall back to the system Python)."""

from __future__ import annotations

import subprocess
import sys

from lab import ROOT


def test_lab_runs_without_the_lab_packages(tmp_path):
    """-S -I: no site-packages, so dicomlab (.env reader, waiting, ports) comes from common/src."""
    env_file = tmp_path / "lab.env"
    env_file.write_text("# a comment\nADMIN_TOKEN='0123456789abcdef0123'\n")
    r = subprocess.run([sys.executable, "-S", "-I", str(ROOT / "scripts" / "lab.py"), "env"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "LAB_STATE_DIR": str(tmp_path / "state"),
                            "LAB_ENV_FILE": str(env_file)})
    assert r.returncode == 1 and r.stderr == "", r.stderr  # not running: nothing to export, no traceback
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text('{"runtime": "docker", "project": "x"}')
    r = subprocess.run([sys.executable, "-S", "-I", str(ROOT / "scripts" / "lab.py"), "env"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "LAB_STATE_DIR": str(tmp_path / "state"),
                            "LAB_ENV_FILE": str(env_file)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "export ADMIN_TOKEN=0123456789abcdef0123"  # read from the env file, unquoted


def test_each_labctl_module_stays_small():
    for path in (ROOT / "scripts" / "labctl").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path
