"""Shared fixtures: a test database and Redis db of their own, the LLM stub, real worker processes.

TEST_DATABASE_URL (default: database errortriage_test on 127.0.0.1:5432) is
dropped and created once per session; TEST_REDIS_URL (default: db 13 of the
Redis on 127.0.0.1:6379) is flushed before every test that uses it. Nothing
else on those servers is touched. A second test run started while one is going
takes errortriage_test1 and db 12, and so on.
"""

import fcntl
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _claim_slot() -> int:
    """Take the first free slot 0-5 with a lock file, so test runs in parallel never share a database."""
    for slot in range(6):
        handle = open(f"/tmp/errortriage-test-slot-{slot}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _slot_locks.append(handle)  # held until the process exits
        return slot
    raise RuntimeError("six test runs are already using this machine; wait for one to finish")


_slot_locks: list = []
_SLOT = _claim_slot()
TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/errortriage_test{'' if _SLOT == 0 else _SLOT}"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", f"redis://127.0.0.1:6379/{13 - _SLOT}")

# In-process code (the sweep, the CLI) reads these at import; set them before any import of tasks.app.
os.environ["DATABASE_URL"] = TEST_DATABASE_URL
os.environ["REDIS_URL"] = TEST_REDIS_URL
os.environ["ERRORTRIAGE_ENV_FILE"] = str(ROOT / "tests" / "data" / "empty.env")
for name in ("LLM_BASE_URL", "LLM_API_KEY", "HOLYSHEEP_BASE_URL", "HOLYSHEEP_API_KEY",
             "USE_FALLBACK_CLASSIFIER", "WORKER_ENABLED"):
    os.environ.pop(name, None)

from support.llm_stub import LLMStub  # noqa: E402
from tasks import processes  # noqa: E402
from tasks.store import Store  # noqa: E402

TABLES = ("error_events", "fingerprints", "llm_calls", "dead_letters")


@pytest.fixture(scope="session")
def database_url():
    parts = urlsplit(TEST_DATABASE_URL)
    name = parts.path.lstrip("/")
    admin = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    store = Store(TEST_DATABASE_URL)
    store.migrate()
    store.close()
    return TEST_DATABASE_URL


@pytest.fixture
def store(database_url):
    store = Store(database_url)
    with store.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
    yield store
    store.close()


@pytest.fixture
def redis_url():
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def llm_session():
    stub = LLMStub().start()
    yield stub
    stub.stop()


# Patterns that must never reach a provider, whatever a test sends.
UNSCRUBBED = re.compile(
    r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}|\bsk-[A-Za-z0-9_\-]{16,}|\bAKIA[0-9A-Z]{16}|\beyJ[\w\-]{5,}\.[\w\-]{5,}\."
)


@pytest.fixture
def llm(llm_session):
    llm_session.reset()
    yield llm_session
    for call in llm_session.calls():
        for message in call["body"].get("messages", []):
            leaked = UNSCRUBBED.findall(message.get("content") or "")
            assert not leaked, f"a prompt contains unscrubbed text: {leaked}"


@pytest.fixture
def worker_env(database_url, redis_url):
    """The environment of a worker process: test database and Redis, no provider, fast sweeps."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        PYTHONPATH=str(ROOT),
        SWEEP_INTERVAL_SECONDS="1",
        STALE_AFTER_SECONDS="2",
    )
    return env


@pytest.fixture
def start_worker(worker_env, tmp_path):
    """Start `celery worker` processes on both queues with extra environment; stop them after the test."""
    started = []

    def start(queues="bulk,deep", concurrency=1, name=None, **overrides):
        env = dict(worker_env, **{key: str(value) for key, value in overrides.items()})
        node = name or f"test{len(started)}"
        child = processes.worker(queues, env, tmp_path / "logs", concurrency=concurrency, name=node)
        started.append(child)
        child.start()
        child.wait_ready()
        return child

    yield start
    for child in started:
        child.stop()
