"""Local services of the production path: PostgreSQL (the instance), Redis (the Celery broker and result backend),
Celery workers that run the steps, and optionally the Dagster webserver and daemon, all on 127.0.0.1.

    python -m deploy.services start [--ui] [--workers 2] [--pg-port 5433] [--redis-port 6380] [--ui-port 3000]
    python -m deploy.services status
    python -m deploy.services env        # export lines for a shell: eval "$(python -m deploy.services env)"
    python -m deploy.services stop

Everything lives in the state folder (``--state-dir``, default ``.services/`` at the repository root, git-ignored):
the PostgreSQL cluster, Redis's log, the Dagster home (a copy of ``deploy/dagster.yaml``), the pipeline's tables
(unless ``COUGH_PIPELINE_STORAGE`` says otherwise), one log per service, and ``state.json``, which records every
process ``start`` started (pid, start identity, port). ``stop`` stops exactly those processes, and only while the
pid still belongs to the process that was started (a recycled pid is left alone); the data stays for the next
``start``. A service that fails to start stops the ones started before it.

PostgreSQL runs as the ``postgres`` user when this runs as root (``initdb`` refuses root), as the current user
otherwise. Celery workers are ``celery -A dagster_celery.app worker`` processes with one pool process each, reading
the broker and backend from a ``dagster_celery_config`` module written into the state folder (what
``dagster-celery worker start -y`` writes too), so each step runs in a worker's pool process.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from resources.executor import CELERY_BACKEND, CELERY_BROKER, EXECUTOR
from resources.processes import process_alive, process_identity

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STATE_DIR = REPO / ".services"
INSTANCE_CONFIG = REPO / "deploy" / "dagster.yaml"
STATE_FILE = "state.json"
DEFAULT_PORTS = {"postgres": 5433, "redis": 6380, "ui": 3000}
#: The database role, password and database of the local cluster; a development-only secret (127.0.0.1 only).
PG_USER = PG_PASSWORD = PG_DB = "dagster"
#: Pools and their limits recorded in the instance (``deploy/dagster.yaml`` explains why 1).
POOL_LIMITS = {"training": 1, "mixtures": 1}
APT = "sudo apt-get install -y postgresql redis-server"
#: Where Debian's postgresql packages put each version's binaries.
PG_ROOT = Path("/usr/lib/postgresql")


class ServiceError(RuntimeError):
    """A service could not be started or stopped; the message says what to do."""


# -- binaries -----------------------------------------------------------------------------------------------------


def postgres_bin() -> Path:
    """The folder of ``initdb``/``pg_ctl``: the newest ``/usr/lib/postgresql/<version>/bin``, else the one on PATH."""
    versions = sorted(PG_ROOT.glob("*/bin/pg_ctl"), key=lambda p: _version(p.parts[-3]))
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    raise ServiceError(f"PostgreSQL is not installed (no initdb/pg_ctl); install it with:  {APT}")


def redis_server() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise ServiceError(f"Redis is not installed (no redis-server); install it with:  {APT}")
    return found


def missing_binaries() -> str | None:
    """Why the services cannot start on this machine (a line with the install command), or ``None``."""
    try:
        postgres_bin()
        redis_server()
    except ServiceError as error:
        return str(error)
    return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def _venv_bin(name: str) -> str:
    """A console script of the running interpreter's environment (``.venv/bin/<name>``)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


# -- state --------------------------------------------------------------------------------------------------------


class State:
    """``state.json``: the services started, in start order, and the settings they share."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / STATE_FILE
        data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.services: dict[str, dict] = data.get("services", {})
        self.env: dict[str, str] = data.get("env", {})

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        pending = self.path.with_suffix(".tmp")
        pending.write_text(json.dumps({"services": self.services, "env": self.env}, indent=2))
        pending.replace(self.path)

    def record(self, name: str, pid: int, **details) -> None:
        self.services[name] = {"pid": pid, "identity": process_identity(pid) or "", **details}
        self.save()

    def alive(self, name: str) -> bool:
        service = self.services.get(name)
        return bool(service) and process_alive(service["pid"], service.get("identity", ""))


def service_env(state_dir: Path, ports: Mapping[str, int], base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The settings every service and every client of this instance needs (the instance, the storage, Celery)."""
    redis = f"redis://127.0.0.1:{ports['redis']}"
    return {
        "DAGSTER_HOME": str(state_dir / "dagster_home"),
        "DAGSTER_POSTGRES_HOST": "127.0.0.1",
        "DAGSTER_POSTGRES_PORT": str(ports["postgres"]),
        "DAGSTER_POSTGRES_USER": PG_USER,
        "DAGSTER_POSTGRES_PASSWORD": PG_PASSWORD,
        "DAGSTER_POSTGRES_DB": PG_DB,
        "COUGH_PIPELINE_STORAGE": base.get("COUGH_PIPELINE_STORAGE") or str(state_dir / "data"),
        "COUGH_PIPELINE_CATALOG": base.get("COUGH_PIPELINE_CATALOG") or str(state_dir / "data" / "warehouse.duckdb"),
        EXECUTOR: "celery",
        CELERY_BROKER: f"{redis}/0",
        CELERY_BACKEND: f"{redis}/1",
    }


# -- helpers ------------------------------------------------------------------------------------------------------


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on now (for tests)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check, what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    tail = f"; the end of {log}:\n{log.read_text(errors='replace')[-2000:]}" if log and log.exists() else ""
    raise ServiceError(f"{what} did not come up within {timeout:.0f} s{tail}")


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _as_postgres_user() -> list[str]:
    """The prefix that runs a PostgreSQL binary as its owner: ``runuser -u postgres --`` as root, nothing otherwise."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError as error:
        raise ServiceError(
            f"running as root needs a 'postgres' user for PostgreSQL; install it with:  {APT}"
        ) from error
    return ["runuser", "-u", "postgres", "--"]


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _reachable_by_postgres(path: Path) -> None:
    """As root, every folder above the cluster must let the postgres user through (pytest's tmp folders do not)."""
    if os.geteuid() != 0:
        return
    for parent in path.resolve().parents:
        if not os.stat(parent).st_mode & 0o001:
            raise ServiceError(
                f"the postgres user cannot reach {path}: {parent} is not searchable by others; choose a state "
                "folder under a world-searchable path (chmod o+x)"
            )


def _start_child(state: State, name: str, args: list[str], env: Mapping[str, str], **details) -> int:
    """``args`` in a session of its own (it outlives this command; ``stop`` ends the session), output in
    ``logs/<name>.log``, recorded in the state as ``name`` at once."""
    log = state.folder / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        process = subprocess.Popen(
            args, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env), cwd=REPO,
            start_new_session=True,
        )  # fmt: skip
    state.record(name, process.pid, log=str(log), **details)
    return process.pid


# -- services -----------------------------------------------------------------------------------------------------


def start_postgres(state: State, port: int) -> None:
    bin_dir = postgres_bin()
    runner = _as_postgres_user()
    folder = state.folder / "postgres"
    data = folder / "data"
    folder.mkdir(parents=True, exist_ok=True)
    _chown_to_postgres(folder)
    _reachable_by_postgres(folder)
    log = state.folder / "logs" / "postgres.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    _chown_to_postgres(log)
    if not (data / "PG_VERSION").is_file():
        password_file = folder / "password"
        password_file.write_text(PG_PASSWORD + "\n")
        _chown_to_postgres(password_file)
        _run([*runner, str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, f"--pwfile={password_file}",
              "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"], "initdb")  # fmt: skip
        password_file.unlink()
    # Recorded before it starts: a start that times out half-way is still stopped by stop().
    state.services["postgres"] = {"pid": 0, "identity": "", "port": port, "log": str(log), "data": str(data),
                                  "bin": str(bin_dir)}  # fmt: skip
    state.save()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={folder}"
    _run([*runner, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60",
          "start"], "pg_ctl start", log)  # fmt: skip
    pid = int((data / "postmaster.pid").read_text().split()[0])
    state.record("postgres", pid, port=port, log=str(log), data=str(data), bin=str(bin_dir))
    env = {**os.environ, "PGPASSWORD": PG_PASSWORD}
    exists = subprocess.run(
        [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, "-d", "postgres", "-tAc",
         f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'"], env=env, capture_output=True, text=True,
    )  # fmt: skip
    if exists.stdout.strip() != "1":
        _run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, PG_DB], "createdb", env=env)


def stop_postgres(state: State) -> None:
    """``pg_ctl stop`` on the recorded cluster while its postmaster runs (it stops that cluster and nothing else)."""
    service = state.services["postgres"]
    pid_file = Path(service["data"]) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if not process_alive(pid, ""):
        return
    _run([*_as_postgres_user(), str(Path(service["bin"]) / "pg_ctl"), "-D", service["data"], "-m", "fast", "-w",
          "stop"], "pg_ctl stop")  # fmt: skip


def start_redis(state: State, port: int) -> None:
    folder = state.folder / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    # No persistence: the queue holds only the tasks of runs in flight, which the instance records anyway.
    args = [redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(folder), "--daemonize", "no", "--protected-mode", "yes"]  # fmt: skip
    _start_child(state, "redis", args, os.environ, port=port)
    wait_for(lambda: _redis_answers(port), f"Redis on port {port}", 30, Path(state.services["redis"]["log"]))


def write_celery_config(state: State) -> Path:
    """The ``dagster_celery_config`` module ``dagster_celery.app`` imports: the broker and the result backend."""
    folder = state.folder / "celery"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster_celery_config.py").write_text(
        "# Written by deploy/services.py: the broker and result backend of the local Redis.\n"
        f"broker_url = {state.env[CELERY_BROKER]!r}\n"
        f"result_backend = {state.env[CELERY_BACKEND]!r}\n"
        "worker_prefetch_multiplier = 1\n"
    )
    return folder


def start_worker(state: State, index: int, env: Mapping[str, str]) -> None:
    config = write_celery_config(state)
    name = f"worker{index}"
    worker_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(config), str(REPO), env.get("PYTHONPATH")]))}
    # One pool process per worker: a step gets a whole process, and the workers, not the pools, set the parallelism.
    # The code location is imported before the pool process is forked: a broken one stops the worker at start, and
    # the first step does not wait for the import.
    args = [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker", "-n", f"{name}@%h", "-Q",
            "dagster", "--concurrency", "1", "--prefetch-multiplier", "1", "-O", "fair", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--include", "assets.definitions"]  # fmt: skip
    _start_child(state, f"celery-{name}", args, worker_env, worker=name)


def wait_for_workers(state: State, timeout: float = 120) -> None:
    for name, service in state.services.items():
        if name.startswith("celery-"):
            log = Path(service["log"])
            wait_for(
                lambda log=log, name=name: state.alive(name) and "ready." in log.read_text(errors="replace"),
                f"the Celery {name}",
                timeout,
                log,
            )


def start_ui(state: State, port: int, env: Mapping[str, str]) -> None:
    """The webserver and the daemon (queued runs, schedules, sensors, run monitoring) on the production instance."""
    workspace = str(REPO / "workspace.yaml")
    webserver = [_venv_bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", workspace]
    _start_child(state, "webserver", webserver, env, port=port)
    _start_child(state, "daemon", [_venv_bin("dagster-daemon"), "run", "-w", workspace], env)
    log = Path(state.services["webserver"]["log"])
    wait_for(lambda: _listening(port), f"the Dagster webserver on port {port}", 180, log)


def prepare_instance(state: State, env: Mapping[str, str]) -> None:
    """The Dagster home with the production config; creates the instance's tables (so that the first runs and
    workers do not race to) and records the pools' limits."""
    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    os.environ.update(env)  # the config's env entries are read from this process's environment
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        for pool, limit in POOL_LIMITS.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)


def stop_session(state: State, name: str, timeout: float = 20) -> None:
    """SIGTERM the session a service leads (its own children, e.g. a Celery pool, a code server, go with it), then
    SIGKILL what is left after ``timeout``; nothing when the recorded process is gone or its pid was recycled."""
    if not state.alive(name):
        return
    pid = state.services[name]["pid"]
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and state.alive(name):
        _reap(pid)
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _run(args: list[str], what: str, log: Path | None = None, env: Mapping[str, str] | None = None) -> None:
    completed = subprocess.run(args, capture_output=True, text=True, env=env, cwd="/")
    if completed.returncode != 0:
        tail = f"\n{log.read_text(errors='replace')[-2000:]}" if log and log.exists() else ""
        raise ServiceError(f"{what} failed ({completed.returncode}): {completed.stderr.strip()}{tail}")


# -- commands -----------------------------------------------------------------------------------------------------


def start(state_dir: Path, ports: Mapping[str, int], workers: int = 2, ui: bool = False) -> State:
    """Start every service (stopping those already started when one fails); returns the recorded state."""
    problem = missing_binaries()
    if problem:
        raise ServiceError(problem)
    state_dir = state_dir.resolve()
    state = State(state_dir)
    running = [name for name in state.services if state.alive(name)]
    if running:
        raise ServiceError(f"{', '.join(running)} already running from {state.path}; run stop first")
    wanted = {name: port for name, port in ports.items() if ui or name != "ui"}
    busy = [f"{name} port {port}" for name, port in wanted.items() if not port_free(port)]
    if busy:
        raise ServiceError(f"in use: {', '.join(busy)}; choose other ports (--pg-port, --redis-port, --ui-port)")
    state.services = {}
    state.env = service_env(state_dir, ports)
    state.save()
    env = {**os.environ, **state.env}
    try:
        start_postgres(state, ports["postgres"])
        start_redis(state, ports["redis"])
        prepare_instance(state, env)
        for index in range(1, workers + 1):
            start_worker(state, index, env)
        wait_for_workers(state)
        if ui:
            start_ui(state, ports["ui"], env)
    except BaseException:
        stop(state_dir)
        raise
    return state


def stop(state_dir: Path) -> list[str]:
    """Stop what ``start`` recorded, newest first; returns their names. Data stays for the next start."""
    state = State(state_dir.resolve())
    stopped = []
    for name in reversed(list(state.services)):
        if name == "postgres":
            stop_postgres(state)
        else:
            stop_session(state, name)
        stopped.append(name)
    state.services = {}
    if state.path.is_file():
        state.save()
    return stopped


def status(state_dir: Path) -> list[str]:
    state = State(state_dir.resolve())
    lines = []
    for name, service in state.services.items():
        where = f" port {service['port']}" if "port" in service else ""
        alive = "running" if state.alive(name) else "NOT RUNNING"
        lines.append(f"{name:<16} pid {service['pid']:<8}{where:<11} {alive}  log {service.get('log', '')}")
    return lines or [f"nothing started from {state.path}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status", "env"])
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get("COUGH_SERVICES_DIR", DEFAULT_STATE_DIR)))
    parser.add_argument("--pg-port", type=int, default=DEFAULT_PORTS["postgres"])
    parser.add_argument("--redis-port", type=int, default=DEFAULT_PORTS["redis"])
    parser.add_argument("--ui-port", type=int, default=DEFAULT_PORTS["ui"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ui", action="store_true", help="also start the Dagster webserver and daemon")
    arguments = parser.parse_args(argv)
    ports = {"postgres": arguments.pg_port, "redis": arguments.redis_port, "ui": arguments.ui_port}
    try:
        if arguments.command == "start":
            state = start(arguments.state_dir, ports, arguments.workers, arguments.ui)
            print("\n".join(status(arguments.state_dir)))
            if arguments.ui:
                print(f"Dagster UI (production instance, Celery executor): http://127.0.0.1:{ports['ui']}")
            print(
                f'logs in {state.folder / "logs"}; a shell for this instance: eval "$(python -m deploy.services env)"'
            )
        elif arguments.command == "stop":
            stopped = stop(arguments.state_dir)
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing to stop")
        elif arguments.command == "status":
            print("\n".join(status(arguments.state_dir)))
        else:
            state = State(arguments.state_dir.resolve())
            if not state.env:
                raise ServiceError(f"no services recorded in {state.path}; run start first")
            print("\n".join(f"export {name}={value}" for name, value in state.env.items()))
    except ServiceError as error:
        print(f"services: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
