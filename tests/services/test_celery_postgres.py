"""The production path end to end: ``deploy/services.py`` starts PostgreSQL, Redis and two Celery workers; two
``dataset_job`` runs (``ccs`` and ``coughvid``), submitted side by side by one process (``launch_runs``) with
``COUGH_PIPELINE_EXECUTOR=celery`` against the PostgreSQL instance of ``deploy/dagster.yaml``, run every step in a
worker process, never in the launching process; their tables equal those of an in-process run of the same
partitions into another storage root; ``stop`` leaves none of the started processes behind.

Which step ran in which worker process is printed (``-s`` shows it) and written to ``step_workers.txt`` in the
test's tmp folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterEventType, DagsterInstance, materialize

from assets.cough_filter import cough_filter_model, cough_list
from assets.manifest import manifest
from assets.resources import build_resources
from assets.segmentation import cough_segments
from cough_pipeline.demo_corpus import generate_demo_corpus
from deploy.services import POOL_LIMITS, free_port, missing_binaries
from resources.processes import process_alive
from tests.processes import log_tail

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = ("ccs", "coughvid")
TABLES = ("manifest", "manifest_quarantine", "cough_segments", "cough_list")
#: What differs between two runs of the same step and is no result: a generation folder's name (when and by which
#: run, ``resources.storage.Storage.new_generation``) and the memory addresses ffmpeg puts in its error messages.
RUN_SPECIFIC = ((r"\d{8}T\d{6}-[A-Za-z0-9._-]+?-[0-9a-f]{4}(?=/)", "<generation>"), (r"@ 0x[0-9a-f]+", "@ <address>"))
STEP_EVENTS = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}


def _services(command: str, state_dir: Path, env: dict, *options: str, timeout: float = 240):
    return subprocess.run(
        [sys.executable, "-m", "deploy.services", command, "--state-dir", str(state_dir), *options],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def corpus(tmp_path) -> dict[str, str]:
    """The demo corpus of the two partitions, named by root settings, so that both runs read the same files."""
    roots = generate_demo_corpus(tmp_path / "corpus", datasets=list(PARTITIONS))
    return {f"COUGH_PIPELINE_{name.upper()}_ROOT": str(roots[name]) for name in PARTITIONS}


@pytest.fixture
def services(corpus):
    """PostgreSQL, Redis and two workers on free ports, in a state folder the postgres user can reach (pytest's
    tmp folders are private to root); stopped, and the folder removed, whatever the test does."""
    reason = missing_binaries()
    if reason:
        pytest.skip(f"the production path needs PostgreSQL and Redis: {reason}")
    state_dir = Path(tempfile.mkdtemp(prefix="cough-services-"))
    state_dir.chmod(0o755)
    env = {**os.environ, **corpus}
    try:
        started = _services(
            "start", state_dir, env, "--pg-port", str(free_port()), "--redis-port", str(free_port()), "--workers", "2"
        )
        assert started.returncode == 0, started.stdout + started.stderr
        yield json.loads((state_dir / "state.json").read_text())
    finally:
        state = json.loads((state_dir / "state.json").read_text()) if (state_dir / "state.json").is_file() else {}
        stopped = _services("stop", state_dir, env)
        left = [
            name
            for name, service in state.get("services", {}).items()
            if service["pid"] and process_alive(service["pid"], service["identity"])
        ]
        shutil.rmtree(state_dir, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stderr
        assert not left, f"still running after stop: {left}"


def _process_group_members(pgid: int) -> set[int]:
    """Every live process in the process group ``pgid`` (a worker leads its own session: its pool processes too)."""
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                members.add(int(entry.name))
    return members


def _tables(storage, root: Path, partition: str) -> dict[str, pd.DataFrame]:
    """The tables of one partition, with the storage root and the per-run generation folders taken out of paths
    (the only things two runs into different roots may differ in)."""
    tables = {}
    for table in TABLES:
        frame = storage.read_table(table, [partition])
        for column in frame.columns:
            if pd.api.types.is_string_dtype(frame[column]) or frame[column].dtype == object:
                text = frame[column].astype(str)
                for pattern, replacement in ((re.escape(str(root)), "<root>"), *RUN_SPECIFIC):
                    text = text.str.replace(pattern, replacement, regex=True)
                if not text.equals(frame[column].astype(str)):
                    frame[column] = text
        tables[table] = frame.sort_values(list(frame.columns[:3])).reset_index(drop=True)
    return tables


def test_dataset_job_on_celery_workers_against_postgres_matches_an_in_process_run(
    services, corpus, tmp_path, monkeypatch
):
    env = {**os.environ, **corpus, **services["env"]}
    for name, value in {**corpus, **services["env"]}.items():
        monkeypatch.setenv(name, value)
    celery_root = Path(services["env"]["COUGH_PIPELINE_STORAGE"])
    celery_resources = build_resources(str(celery_root), services["env"]["COUGH_PIPELINE_CATALOG"])
    clock = [("start", time.monotonic())]
    # The cough filter the cough list reads is not part of dataset_job: trained once, copied to the other root.
    assert materialize([cough_filter_model], resources=celery_resources).success
    local_root = tmp_path / "in_process"
    shutil.copytree(celery_root / "models", local_root / "models")

    clock.append(("cough filter trained", time.monotonic()))
    print(f"cough filter trained in {clock[-1][1] - clock[-2][1]:.0f} s")
    workers = {name: service for name, service in services["services"].items() if name.startswith("celery-")}
    assert len(workers) == 2

    # One process submits both runs at once (a thread each), so that their steps compete for the two workers.
    log = tmp_path / "launch.log"
    with open(log, "wb") as output:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "tests.services.launch_runs", *PARTITIONS],
            cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        assert launcher.wait(timeout=400) == 0, log_tail(log)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    clock.append(("both runs on Celery", time.monotonic()))
    print(f"both runs on Celery in {clock[-1][1] - clock[-2][1]:.0f} s")
    worker_of = {pid: name for name, service in workers.items() for pid in _process_group_members(service["pid"])}
    with DagsterInstance.from_config(services["env"]["DAGSTER_HOME"]) as instance:
        assert instance.get_run_records() and "postgres" in type(instance.run_storage).__module__
        for pool, limit in POOL_LIMITS.items():
            assert instance.event_log_storage.get_concurrency_info(pool).slot_count == limit
        records = instance.get_run_records()
        runs = {record.dagster_run.tags["dagster/partition"]: record.dagster_run for record in records}
        assert set(runs) == set(PARTITIONS) and all(run.is_success for run in runs.values())
        steps = []  # (partition, step, pid, start, end)
        run_pids = {}  # the process that ran each run (submitted its steps)
        for partition, run in runs.items():
            events = [
                entry
                for entry in instance.all_logs(run.run_id)
                if entry.dagster_event is not None and entry.dagster_event.event_type in STEP_EVENTS
            ]
            started = {e.dagster_event.step_key: e for e in events if e.dagster_event.event_type.value == "STEP_START"}
            ended = {e.dagster_event.step_key: e for e in events if e.dagster_event.event_type.value == "STEP_SUCCESS"}
            assert set(started) == set(ended) and started, f"{partition}: steps started {started}, ended {ended}"
            [run_start] = [
                entry
                for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_START)
                if entry.dagster_event is not None
            ]
            run_pids[partition] = run_start.dagster_event.pid
            for step, start in started.items():
                assert ended[step].dagster_event.pid == start.dagster_event.pid
                steps.append((partition, step, start.dagster_event.pid, start.timestamp, ended[step].timestamp))

    first = min(start for _, _, _, start, _ in steps)
    lines = [
        f"{partition:<9} {step:<15} {start - first:5.1f}-{end - first:5.1f} s  pid {pid:<7} "
        + (f"{worker_of[pid]} (worker pid {workers[worker_of[pid]]['pid']})" if pid in worker_of else "NOT A WORKER")
        for partition, step, pid, start, end in sorted(steps, key=lambda s: s[3])
    ]
    report = "step -> worker process (in start order)\n" + "\n".join(lines)
    (tmp_path / "step_workers.txt").write_text(report + "\n")
    print(report)

    assert all(pid in worker_of for _, _, pid, _, _ in steps), report
    print(f"runs submitted by pids {run_pids} (launcher pid {launcher.pid})")
    assert not ({launcher.pid, *run_pids.values()} & {pid for _, _, pid, _, _ in steps}), report
    assert {step for _, step, _, _, _ in steps} >= {"manifest", "cough_segments", "cough_list"}
    # One pool process per worker: steps that overlapped in time ran in different workers, so both got work.
    overlapping = [
        (a, b) for i, a in enumerate(steps) for b in steps[i + 1 :] if a[3] < b[4] and b[3] < a[4] and a[0] != b[0]
    ]
    for a, b in overlapping:
        assert worker_of[a[2]] != worker_of[b[2]], f"{a[:2]} and {b[:2]} overlapped in one worker\n{report}"
    if overlapping:
        assert len({worker_of[pid] for _, _, pid, _, _ in steps}) == 2, report

    local_resources = build_resources(str(local_root), str(tmp_path / "in_process.duckdb"))
    for partition in PARTITIONS:
        assert materialize(
            [manifest, cough_segments, cough_list, cough_filter_model],
            partition_key=partition,
            resources=local_resources,
            selection=[manifest, cough_segments, cough_list],
        ).success
        on_celery = _tables(celery_resources["storage"], celery_root, partition)
        in_process = _tables(local_resources["storage"], local_root, partition)
        for table in TABLES:
            assert len(on_celery[table]) == len(in_process[table]), table
            pd.testing.assert_frame_equal(on_celery[table], in_process[table], check_like=True, obj=table)
        assert len(on_celery["manifest"]) > 0 and len(on_celery["cough_segments"]) > 0
    clock.append(("in-process runs compared", time.monotonic()))
    print(", ".join(f"{what}: {now - before:.0f} s" for (_, before), (what, now) in zip(clock, clock[1:])))
