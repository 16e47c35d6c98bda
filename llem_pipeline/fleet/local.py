"""A local fleet in a temporary folder: Redis and Postgres from Debian's packages, Celery workers, the daemon.

Used by `make fleet-demo` and the fleet tests. Everything listens on 127.0.0.1 on free ports chosen here;
every process is started here and stopped here by PID (SIGTERM, then SIGKILL after a grace), with the
processes it started itself (run workers, measurement workers) found by walking its process tree before
any signal is sent. Postgres refuses to run as root, so as root it runs as the ``postgres`` user through
``runuser`` (or LLEM_FLEET_PG_USER).

Layout under the temporary folder::

    dagster_home/dagster.yaml   deploy/fleet/dagster.yaml (runs, events, schedules and pools in Postgres)
    data/                       the storage host's data dir: llem.duckdb, registered configs, launches
    shared/runs/                the run folders' location shared by GPU hosts and the storage host
    hosts/<worker>/locks/       each GPU host's own GPU lock files
    redis/ pg/ logs/
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from llem_pipeline.paths import PROJECT_ROOT

FLEET_DIR = PROJECT_ROOT / "deploy" / "fleet"
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
STOP_GRACE_S = 10.0


class FleetError(RuntimeError):
    """The local fleet could not start; the message says which part and why (with its log file)."""


@dataclass(frozen=True)
class GpuHost:
    """One Celery worker standing in for a GPU host: its name, hardware target and simulated GPU model.

    ``cpus``, when given, is the set of CPU numbers the host's worker is pinned to (``os.sched_setaffinity``
    in the spawned worker, inherited by the steps and measurement subprocesses it starts): a simulated GPU
    computes on the CPU, so pinning gives each simulated host its own compute the way a real host has its own
    GPU. None (the default) leaves the worker on every CPU of this machine.
    """

    name: str
    target: str
    model: str
    cpus: tuple[int, ...] | None = None


DEFAULT_HOSTS = (GpuHost("h100-1", "h100", "H100-SXM5-80GB"), GpuHost("a100-1", "a100", "A100-SXM4-40GB"))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    """Return True when something accepts connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pg_bin() -> Path:
    found = sorted(Path("/").glob(PG_BIN_GLOB.lstrip("/")))
    if not found:
        raise FleetError("Postgres is not installed: `apt-get install -y postgresql` (make fleet-deps)")
    return found[-1]


@dataclass
class Proc:
    """A process the fleet started: its name, Popen handle and log file."""

    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class LocalFleet:
    """Start with ``start()`` (or use as a context manager); ``stop()`` ends every process it started."""

    hosts: tuple[GpuHost, ...] = DEFAULT_HOSTS
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="llem-fleet-")))
    studies_dir: Path = FLEET_DIR / "studies"
    procs: dict[str, Proc] = field(default_factory=dict)
    redis_port: int = 0
    pg_port: int = 0
    pg_user: str = ""

    # -- configuration -------------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def runs(self) -> Path:
        return self.root / "shared" / "runs"

    @property
    def duckdb(self) -> Path:
        return self.data / "llem.duckdb"

    def env(self, **extra: str) -> dict[str, str]:
        """Return the environment of every fleet process (plus ``extra``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLEM_", "DAGSTER_"))}
        env.update({
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            "LLEM_PG_URL": f"postgresql+psycopg2://llem@127.0.0.1:{self.pg_port}/postgres",
            "LLEM_EXECUTOR": "celery",
            "LLEM_CELERY_BROKER": f"redis://127.0.0.1:{self.redis_port}/0",
            "LLEM_DEVICES": "simulated",
            "LLEM_DATA_DIR": str(self.data),
            "LLEM_DUCKDB": str(self.duckdb),
            "LLEM_RUNS_DIR": str(self.runs),
            "LLEM_STUDIES_DIR": str(self.studies_dir),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env

    # -- processes -------------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
               cpus: tuple[int, ...] | None = None) -> Proc:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus is not None else None
        with open(log, "ab") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env or self.env(), cwd=str(cwd or PROJECT_ROOT), start_new_session=True,
                                     preexec_fn=pin)
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def _wait_for(self, what: str, ready, proc: Proc, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise FleetError(f"{what} exited with code {proc.popen.returncode} while starting; see {proc.log}:\n"
                                 f"{_tail(proc.log)}")
            if ready():
                return
            time.sleep(0.2)
        raise FleetError(f"{what} was not ready after {timeout_s:g} s; see {proc.log}:\n{_tail(proc.log)}")

    def start_redis(self) -> None:
        """Start redis-server on a free port, its queues on disk (appendonly, fsync always): a restart keeps them."""
        folder = self.root / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        self.redis_port = self.redis_port or free_port()
        proc = self._spawn("redis", [
            shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.redis_port),
            "--bind", "127.0.0.1", "--dir", str(folder), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--daemonize", "no", "--protected-mode", "yes"])
        self._wait_for("redis-server", lambda: port_open(self.redis_port), proc, 30)

    def _as_pg_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.pg_user, "--", *argv] if os.geteuid() == 0 else argv

    def start_postgres(self) -> None:
        """initdb a cluster in the temporary folder and start postgres on a free port of 127.0.0.1 (trust auth
        for the local superuser 'llem'); as root, both run as the postgres user."""
        pg = _pg_bin()
        data = self.root / "pg" / "data"
        sockets = self.root / "pg" / "sock"
        data.parent.mkdir(parents=True, exist_ok=True)
        sockets.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self.pg_user = os.environ.get("LLEM_FLEET_PG_USER", "postgres")
            try:
                user = pwd.getpwnam(self.pg_user)
            except KeyError:
                raise FleetError(f"Postgres cannot run as root and there is no user {self.pg_user!r}: install "
                                 "postgresql (it adds the user) or set LLEM_FLEET_PG_USER") from None
            os.chmod(self.root, 0o711)  # the postgres user only traverses the temporary folder
            for path in (data.parent, sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        log = self.root / "logs" / "initdb.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            code = subprocess.call(self._as_pg_user([str(pg / "initdb"), "-D", str(data), "-U", "llem", "-A", "trust",
                                                     "--no-sync", "-E", "UTF8"]),
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if code != 0:
            raise FleetError(f"initdb failed with code {code}; see {log}:\n{_tail(log)}")
        self.pg_port = self.pg_port or free_port()
        proc = self._spawn("postgres", self._as_pg_user([
            str(pg / "postgres"), "-D", str(data), "-p", str(self.pg_port), "-k", str(sockets),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"]))
        self._wait_for("postgres", lambda: port_open(self.pg_port), proc, 60)

    def write_instance(self) -> None:
        """Write DAGSTER_HOME/dagster.yaml (the fleet's) and create the run/event storage in Postgres."""
        home = self.root / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(FLEET_DIR / "dagster.yaml", home / "dagster.yaml")
        for path in (self.data, self.runs):
            path.mkdir(parents=True, exist_ok=True)
        code = subprocess.call([sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get().dispose()"],
                               env=self.env(), cwd=str(PROJECT_ROOT), stdout=subprocess.DEVNULL)
        if code != 0:
            raise FleetError("the Dagster instance could not open its Postgres storage (LLEM_PG_URL)")

    def start_worker(self, name: str, queue: str, cpus: tuple[int, ...] | None = None, **env: str) -> Proc:
        """Start a single-slot Celery worker named ``name`` on ``queue`` (a GPU host or the storage host), pinned
        to ``cpus`` when given (see GpuHost)."""
        celery = Path(sys.executable).with_name("celery")
        proc = self._spawn(f"worker-{name}", [
            str(celery), "-A", "llem_pipeline.fleet.celery_app", "worker", "-Q", queue, "-c", "1", "-n", f"{name}@%h",
            "--prefetch-multiplier=1", "--without-gossip", "--without-mingle", "-l", "INFO"], env=self.env(**env),
            cpus=cpus)
        self._wait_for(f"celery worker {name}", lambda: "ready." in proc.log.read_text(errors="replace"), proc, 120)
        return proc

    def start_gpu_host(self, host: GpuHost) -> Proc:
        """Start the Celery worker of GPU host ``host`` on queue gpu-<target>, with its own GPU locks, pinned to
        ``host.cpus`` when given. Raises FleetError when ``host.cpus`` names no CPU or one this process may not
        use."""
        if host.cpus is not None:
            usable = os.sched_getaffinity(0)
            if not host.cpus or not set(host.cpus) <= usable:
                raise FleetError(f"GpuHost {host.name!r}: cpus={host.cpus!r} is not a non-empty subset of the CPUs "
                                 f"this process may use {sorted(usable)}; name CPUs from that list or cpus=None")
        locks = self.root / "hosts" / host.name / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        return self.start_worker(host.name, f"gpu-{host.target}", cpus=host.cpus, LLEM_TARGET=host.target,
                                 LLEM_SIM_GPU_MODEL=host.model, LLEM_LOCKS_DIR=str(locks))

    def start_storage(self) -> Proc:
        """Start the storage host's Celery worker (queue 'storage', the one DuckDB writer)."""
        return self.start_worker("storage", "storage")

    def start_daemon(self) -> Proc:
        """Start dagster-daemon (run queue, sensors, run monitoring) on the fleet instance."""
        daemon = Path(sys.executable).with_name("dagster-daemon")
        proc = self._spawn("daemon", [str(daemon), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")])
        self._wait_for("dagster-daemon", self._daemon_ready, proc, 240)
        return proc

    def _daemon_ready(self) -> bool:
        code = subprocess.call(
            [sys.executable, "-c", "import sys, dagster as dg\n"
             "from llem_pipeline.defs.automation.launching import daemon_running\n"
             "with dg.DagsterInstance.get() as i: sys.exit(0 if daemon_running(i) else 1)"],
            env=self.env(), cwd=str(PROJECT_ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return code == 0

    def start(self) -> LocalFleet:
        """Start Redis, Postgres, the instance, the GPU hosts, the storage worker and the daemon; stops what
        started when a part fails, then raises FleetError."""
        try:
            self.start_redis()
            self.start_postgres()
            self.write_instance()
            for host in self.hosts:
                self.start_gpu_host(host)
            self.start_storage()
            self.start_daemon()
        except BaseException:
            self.stop()
            raise
        return self

    # -- stopping --------------------------------------------------------------------------------------
    def _tree(self, proc: Proc) -> list[psutil.Process]:
        try:
            top = psutil.Process(proc.popen.pid)
            return [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop_proc(self, name: str, sig: int = signal.SIGTERM, grace_s: float = STOP_GRACE_S) -> None:
        """Stop process ``name`` and every process below it: ``sig``, then SIGKILL after ``grace_s`` s."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        tree = self._tree(proc)
        # the postmaster (below runuser as root) gets SIGINT, Postgres's fast shutdown; it ends its backends
        signalled = tree[1:2] if name == "postgres" and len(tree) > 1 and tree[0].name() == "runuser" else tree
        for p in signalled:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGINT if name == "postgres" else sig)
        _, alive = psutil.wait_procs(tree, timeout=grace_s)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=grace_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=grace_s)

    def stop(self) -> None:
        """Stop every process started here, the daemon and workers first, Postgres and Redis last."""
        order = ["daemon", *[n for n in self.procs if n.startswith("worker-")], "postgres", "redis"]
        for name in [*order, *list(self.procs)]:
            self.stop_proc(name)

    def leftovers(self) -> list[str]:
        """Return what is still listening on the fleet's ports (should be nothing after ``stop``)."""
        return [f"127.0.0.1:{p}" for p in (self.redis_port, self.pg_port) if p and port_open(p)]

    def remove(self) -> None:
        """Delete the temporary folder."""
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def local_fleet(**kwargs) -> Iterator[LocalFleet]:
    """Yield a started LocalFleet; stop it (and delete its folder unless LLEM_FLEET_KEEP=1) on exit."""
    fleet = LocalFleet(**kwargs)
    with fleet:
        yield fleet
    if os.environ.get("LLEM_FLEET_KEEP") != "1":
        fleet.remove()
