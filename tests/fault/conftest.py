"""Fixtures of the fault-injection suite: our own redis-server, an app process, workers, counts.

Every server here is started by the test, on a free loopback port or a Unix
socket in a temporary folder. The machine's Redis (6379) and Postgres (5432)
are never stopped, frozen or restarted. The test database is the session's
errortriage_test, except in the Postgres restart case, which uses an embedded
Postgres of its own.
"""

import pytest

from faultkit import AppProcess, FaultWorker, RedisServer
from tasks import processes


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def celery_children(tmp_path):
    """Start worker and beat processes; stop whatever is left after the test."""
    started = []

    def start(env, kind="worker", queues="bulk,deep", concurrency=2, name=None, short_visibility=False):
        log_dir = tmp_path / "logs"
        if kind == "beat":
            child = processes.beat(env, log_dir)
        else:
            node = name or f"fault{len(started)}"
            child = processes.worker(queues, env, log_dir, concurrency=concurrency, name=node)
            if short_visibility:
                child = FaultWorker(child.name, child.arguments, env, child.log_path)
        started.append(child)
        child.start()
        if kind != "beat":
            child.wait_ready()
        return child

    yield start
    for child in started:
        child.stop()


@pytest.fixture
def start_app():
    apps = []

    def start(env, mode="plain"):
        app = AppProcess(env, mode)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.close()
