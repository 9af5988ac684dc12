"""Helpers of the fault-injection suite: our own redis-server, an app process, workers, counts."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from tasks import processes
from tasks.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
FAULT_DIR = Path(__file__).resolve().parent
APP = FAULT_DIR / "fault_app.py"


class RedisServer:
    """A redis-server child on a free loopback port, persisting nothing: stop, start, freeze, thaw."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.log_dir = log_dir
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / "redis.log", "ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.log_dir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.log_dir / 'redis.log'}")

    def stop(self) -> None:
        """Stop the server; connections to the port are refused until start()."""
        if self.process is None:
            return
        self.thaw()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def refuses(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(1)
            return probe.connect_ex(("127.0.0.1", self.port)) != 0


def base_env(database_url: str, redis_url: str, **overrides) -> dict:
    env = dict(os.environ)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, PYTHONPATH=os.pathsep.join([str(ROOT), str(FAULT_DIR)]),
               SWEEP_INTERVAL_SECONDS="2", STALE_AFTER_SECONDS="10")
    env.update({key: str(value) for key, value in overrides.items()})
    return env


class FaultWorker(processes.CeleryProcess):
    """A worker of fault_worker_app: the real app, with a visibility timeout the test can wait for."""

    def start(self) -> "FaultWorker":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        command = [sys.executable, "-m", "celery", "-A", "fault_worker_app", *self.arguments]
        self.process = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self


class AppProcess:
    """tests/fault/fault_app.py as a child process, driven one JSON command per line."""

    def __init__(self, env: dict, mode: str = "plain"):
        self.process = subprocess.Popen(
            [sys.executable, str(APP), mode], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1,
        )

    def call(self, command: str, **arguments) -> dict:
        self.process.stdin.write(json.dumps(dict(arguments, cmd=command)) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"fault app died: {self.process.stderr.read()[-3000:]}")
        return json.loads(line)

    def close(self) -> str:
        if self.process.poll() is None:
            try:
                self.call("exit")
            except (RuntimeError, BrokenPipeError, ValueError):
                pass
        try:
            _, errors = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, errors = self.process.communicate()
        return errors


def stored_ids(store) -> set:
    with store.cursor() as cursor:
        cursor.execute("SELECT event_id FROM error_events")
        return {row["event_id"] for row in cursor.fetchall()}


def counts(store, produced: set) -> dict:
    """The five figures every case prints: produced, stored, classified, duplicates, lost."""
    with store.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) AS stored, count(*) FILTER (WHERE classified_at IS NOT NULL) AS classified,"
            " count(DISTINCT event_id) AS distinct_ids FROM error_events"
        )
        row = cursor.fetchone()
        # A fingerprint counted more often than it has rows means an event was counted twice.
        cursor.execute(
            "SELECT coalesce(sum(f.event_count - r.n), 0) AS extra FROM fingerprints f"
            " JOIN (SELECT fingerprint, count(*) AS n FROM error_events GROUP BY fingerprint) r USING (fingerprint)"
        )
        extra = int(cursor.fetchone()["extra"])
        cursor.execute("SELECT event_id FROM error_events")
        ids = {found["event_id"] for found in cursor.fetchall()}
    return {
        "produced": len(produced),
        "stored": int(row["stored"]),
        "classified": int(row["classified"]),
        "duplicates": int(row["stored"]) - int(row["distinct_ids"]) + extra,
        "lost": len(produced - ids),
    }


def report(case: str, figures: dict) -> None:
    """Print a case's figures; with FAULT_REPORT set, also append them to that JSON Lines file."""
    print(f"\n[{case}] " + " ".join(f"{key}={value}" for key, value in figures.items()))
    target = os.environ.get("FAULT_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps({"case": case, **figures}) + "\n")


def wait_until(predicate, timeout: float, interval: float = 0.25):
    """Poll `predicate`; return its last value after `timeout` seconds (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value
