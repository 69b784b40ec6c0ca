"""``make ui`` serves the Dagster UI with the asset graph: start the webserver on the workspace and ask it."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.request
from pathlib import Path

from tests.processes import child_process, log_tail

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


def test_makefile_ui_target_uses_the_workspace():
    assert "dagster dev -w workspace.yaml" in (REPO / "Makefile").read_text()


def test_webserver_serves_the_asset_graph(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    log = tmp_path / "webserver.log"
    command = [str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml"]
    with child_process([*command, "-h", "127.0.0.1", "-p", str(port)], log, cwd=REPO, env=env) as server:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                assert server.poll() is None, log_tail(log)
                assert time.monotonic() < deadline, "the UI did not start within 120 s"
                time.sleep(1)
        nodes = graphql(port, "{ assetNodes { assetKey { path } groupName partitionKeys } }")["assetNodes"]
        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert {"manifest", "manifest_quarantine"} <= set(by_key)
        assert len(by_key["manifest"]["partitionKeys"]) == 6
