"""``deploy/services.py`` without starting anything: a missing binary is one line with the install command, and
``stop`` stops only processes it started (a pid that now belongs to another process is left alone)."""

from __future__ import annotations

import json
import subprocess
import sys

from deploy import services
from resources.processes import process_identity


def test_a_missing_binary_names_the_apt_get_command(monkeypatch, tmp_path):
    monkeypatch.setattr(services, "PG_ROOT", tmp_path / "no-postgresql")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert services.missing_binaries() == (
        "PostgreSQL is not installed (no initdb/pg_ctl); install it with:  "
        "sudo apt-get install -y postgresql redis-server"
    )
    assert services.main(["start", "--state-dir", str(tmp_path / "state")]) == 1
    assert not (tmp_path / "state").exists()


def test_stop_ends_the_recorded_process_and_leaves_a_recycled_pid_alone(tmp_path):
    started = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        state = {
            "services": {
                "worker": {"pid": started.pid, "identity": process_identity(started.pid)},
                # the recorded process is gone and its pid now runs something else: a different start identity
                "recycled": {"pid": other.pid, "identity": "another-boot:1"},
            },
            "env": {},
        }
        (tmp_path / "state.json").write_text(json.dumps(state))
        assert services.stop(tmp_path) == ["recycled", "worker"]
        assert started.wait(timeout=30) is not None
        assert other.poll() is None
        assert json.loads((tmp_path / "state.json").read_text())["services"] == {}
        assert services.stop(tmp_path) == []
    finally:
        for process in (started, other):
            process.kill()
            process.wait()
