"""Start and stop `celery worker` and `celery beat` as real child processes.

The demo and the integration tests use this; production uses the Procfile.
Each child gets its own process group, so stopping it also stops the prefork
pool processes it started.
"""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)


class CeleryProcess:
    """One `celery -A tasks.app ...` process with its log file."""

    def __init__(self, name: str, arguments: list, env: dict, log_path: Path):
        self.name = name
        self.arguments = arguments
        self.env = env
        self.log_path = log_path
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "CeleryProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        command = [sys.executable, "-m", "celery", "-A", "tasks.app", *self.arguments]
        self.process = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        logger.info("started %s: pid=%d log=%s", self.name, self.process.pid, self.log_path)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the worker log says it is ready; raise RuntimeError with the log tail if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self.log_path.exists() and b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        tail = self.log_path.read_bytes()[-2000:].decode("utf-8", "replace") if self.log_path.exists() else ""
        raise RuntimeError(f"{self.name} did not become ready within {timeout:.0f}s; log tail:\n{tail}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group (warm shutdown), then SIGKILL whatever is left after `timeout`."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crash would."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
            self.process = None


def worker(queue: str, env: dict, log_dir: Path, concurrency: int = 1, name: Optional[str] = None) -> CeleryProcess:
    """Return a worker process consuming `queue` with a prefork pool of `concurrency` children."""
    node = name or f"{queue}-{os.getpid()}"
    arguments = [
        "worker", "-Q", queue, "-c", str(concurrency), "-n", f"{node}@%h",
        "--loglevel", "INFO", "--without-mingle", "--without-gossip",
    ]
    return CeleryProcess(f"worker {node}", arguments, env, log_dir / f"worker-{node}.log")


def beat(env: dict, log_dir: Path) -> CeleryProcess:
    """Return a beat process keeping its schedule file in `log_dir`."""
    arguments = ["beat", "--loglevel", "INFO", "-s", str(log_dir / "celerybeat-schedule")]
    return CeleryProcess("beat", arguments, env, log_dir / "beat.log")
