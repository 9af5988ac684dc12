"""The Postgres store: named queries from sql/queries.sql, migrations, one pool per process.

The pool is created on first use in each process and re-created when the
process id changes, so Celery's prefork children never share a connection
inherited from the parent.
"""

import logging
import os
import re
import threading
from contextlib import contextmanager
from importlib import resources
from typing import Iterator, Optional

import psycopg2
import psycopg2.extras
import psycopg2.pool

from config.errors import ErrortriageError
from config.settings import mask_url

logger = logging.getLogger(__name__)

# Serialises concurrent `migrate` runs: any fixed 64-bit number unique to this schema.
MIGRATION_LOCK_ID = 0x6572726F72747269


class StoreError(ErrortriageError):
    """Postgres is unreachable or a query failed; the task that hit it should retry."""


class StoreDataError(ErrortriageError):
    """Postgres rejected a value (psycopg2.DataError); retrying the same data cannot help."""


def _load_queries() -> dict:
    """Read every named block of every .sql file in tasks/sql (migrations excluded)."""
    queries = {}
    folder = resources.files("tasks").joinpath("sql")
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if not entry.name.endswith(".sql"):
            continue
        for block in re.split(r"^-- name: ", entry.read_text(encoding="utf-8"), flags=re.M)[1:]:
            name, _, body = block.partition("\n")
            if name.strip() in queries:
                raise ValueError(f"query {name.strip()!r} is defined twice; rename one in {entry.name}")
            queries[name.strip()] = body.strip()
    return queries


QUERIES = _load_queries()


def migration_files() -> list:
    """Return (version, sql) of each numbered migration file, in order."""
    folder = resources.files("tasks").joinpath("sql/migrations")
    files = sorted(entry.name for entry in folder.iterdir() if re.fullmatch(r"\d{4}_\w+\.sql", entry.name))
    return [(name[:-4], folder.joinpath(name).read_text(encoding="utf-8")) for name in files]


class Store:
    """Runs named queries on a per-process connection pool."""

    # Connections open on demand, so a generous cap costs nothing for prefork
    # children and leaves room for a threads or gevent pool.
    def __init__(self, dsn: str, max_connections: int = 32):
        self.dsn = dsn
        self.max_connections = max_connections
        self._pool: Optional[psycopg2.pool.ThreadedConnectionPool] = None
        self._pool_pid: Optional[int] = None
        self._lock = threading.Lock()

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                # A pool inherited through fork belongs to the parent: drop it without closing its sockets.
                try:
                    self._pool = psycopg2.pool.ThreadedConnectionPool(1, self.max_connections, self.dsn)
                except psycopg2.Error as error:
                    raise StoreError(f"cannot connect to Postgres at {mask_url(self.dsn)}: {error}".strip()) from error
                self._pool_pid = os.getpid()
            return self._pool

    def close(self) -> None:
        """Close every connection of this process's pool."""
        with self._lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.closeall()
            self._pool = None

    @contextmanager
    def cursor(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """Yield a cursor in a transaction: commit on success, roll back and raise StoreError on failure."""
        pool = self._get_pool()
        try:
            connection = pool.getconn()
        except psycopg2.Error as error:
            raise StoreError(f"cannot get a Postgres connection: {error}".strip()) from error
        broken = False
        try:
            with connection:
                with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                    yield cursor
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
            broken = True
            raise StoreError(f"Postgres connection failed: {error}".strip()) from error
        except psycopg2.DataError as error:
            raise StoreDataError(f"Postgres rejected a value: {error}".strip()) from error
        finally:
            pool.putconn(connection, close=broken or connection.closed != 0)

    def fetchone(self, name: str, **params) -> Optional[dict]:
        with self.cursor() as cursor:
            cursor.execute(QUERIES[name], params)
            return cursor.fetchone() if cursor.description else None

    def fetchall(self, name: str, **params) -> list:
        with self.cursor() as cursor:
            cursor.execute(QUERIES[name], params)
            return cursor.fetchall() if cursor.description else []

    def execute(self, name: str, **params) -> int:
        """Run a query; return the number of rows it touched."""
        with self.cursor() as cursor:
            cursor.execute(QUERIES[name], params)
            return cursor.rowcount

    @contextmanager
    def transaction(self) -> Iterator["Transaction"]:
        """Yield a Transaction whose named queries commit together at the end of the block."""
        with self.cursor() as cursor:
            yield Transaction(cursor)

    def insert_event(self, event_id: str, fingerprint: str, signature: str, context: dict) -> bool:
        """Store a new event and count it under its fingerprint; return False if it was stored before."""
        with self.cursor() as cursor:
            cursor.execute(
                QUERIES["insert_event"],
                {"event_id": event_id, "fingerprint": fingerprint, "context": psycopg2.extras.Json(context)},
            )
            if cursor.fetchone() is None:
                return False
            cursor.execute(QUERIES["upsert_fingerprint"], {"fingerprint": fingerprint, "signature": signature})
            return True

    def fingerprint_count(self, fingerprint: str) -> int:
        row = self.fetchone("fingerprint_count", fingerprint=fingerprint)
        return int(row["event_count"]) if row else 0

    def migrate(self) -> list:
        """Apply the migrations not applied yet; return the versions applied now."""
        applied_now = []
        with self.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cursor.execute("SELECT version FROM schema_migrations")
            done = {row["version"] for row in cursor.fetchall()}
            for version, sql in migration_files():
                if version in done:
                    continue
                cursor.execute(sql)
                cursor.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied_now.append(version)
        for version in applied_now:
            logger.info("applied migration %s", version)
        return applied_now


class Transaction:
    """Named queries on one cursor, inside one transaction."""

    def __init__(self, cursor):
        self.cursor = cursor

    def fetchone(self, name: str, **params) -> Optional[dict]:
        self.cursor.execute(QUERIES[name], params)
        return self.cursor.fetchone() if self.cursor.description else None

    def receive_event(self, event_id: str, fingerprint: str, signature: str, context: dict) -> tuple:
        """Store an event once, count it under its fingerprint, and read both rows back.

        Return (new, event row, fingerprint row); `new` is False for an event stored before.
        """
        new = self.fetchone(
            "insert_event", event_id=event_id, fingerprint=fingerprint, context=psycopg2.extras.Json(context)
        ) is not None
        if new:
            self.fetchone("upsert_fingerprint", fingerprint=fingerprint, signature=signature)
        event_row = self.fetchone("get_event", event_id=event_id)
        return new, event_row, self.fetchone("get_fingerprint", fingerprint=event_row["fingerprint"])


_process_stores: dict = {}


def store_for(database_url: Optional[str]) -> Store:
    """Return the Store this process uses for `database_url`, shared by every task module."""
    if not database_url:
        raise StoreError("DATABASE_URL is not set; set it to postgresql://user@host:5432/dbname")
    store = _process_stores.get(database_url)
    if store is None:
        store = _process_stores[database_url] = Store(database_url)
    return store
