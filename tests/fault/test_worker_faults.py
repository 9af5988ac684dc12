"""Worker-side faults: a pool process or a whole worker SIGKILLed mid-batch, Postgres restarted, a provider that misbehaves."""

import os
import signal
import time

import pytest

from classifier.context import extract_context
from config import load_settings
from faultkit import base_env, counts, report, stored_ids, wait_until
from support import llm_stub
from support.chaos_llm import ChaosLLMStub
from support.helpers import llm_env
from tasks.embedded import EmbeddedPostgres
from tasks.hook import Producer
from tasks.store import Store, StoreError

pytestmark = pytest.mark.slow


def make_event(number: int, kinds: int = 7) -> dict:
    """An error of one of `kinds` fingerprints (each kind is a new exception type and view)."""
    kind = number % kinds
    return {
        "event_id": f"{number:032x}",
        "level": "error",
        "platform": "python",
        "exception": {"values": [{
            "type": f"UpstreamError{kind}",
            "module": "shop.clients",
            "value": f"503 Server Error for url: http://inventory.local/items/{number}",
            "stacktrace": {"frames": [{"module": "shop.views", "function": f"view{kind}", "lineno": 12,
                                       "in_app": True}]},
        }]},
    }


def publish(redis_url: str, numbers, kinds: int = 7) -> set:
    producer = Producer(load_settings({"REDIS_URL": redis_url}), source="fault")
    return {producer.publish(extract_context(make_event(number, kinds))) for number in numbers}


def safe_counts(store, produced):
    try:
        return counts(store, produced)
    except StoreError:
        return None  # Postgres is restarting; ask again


def all_classified(store, produced):
    figures = safe_counts(store, produced)
    return figures if figures and figures["lost"] == 0 and figures["classified"] == len(produced) else None


def llm_calls_per_event(store, tier: str) -> dict:
    with store.cursor() as cursor:
        cursor.execute("SELECT event_id, count(*) AS n FROM llm_calls WHERE tier = %s AND outcome = 'ok'"
                       " GROUP BY event_id", (tier,))
        return {row["event_id"]: int(row["n"]) for row in cursor.fetchall()}


def test_whole_worker_sigkill_loses_at_most_one(store, database_url, own_redis, celery_children, llm):
    """3b. The whole worker (main process and pool) is SIGKILLed while it works through 300 events."""
    llm.default_triage = llm_stub.Reply(200, llm_stub.completion(llm_stub.TRIAGE_REPLY), delay=0.05)
    env = base_env(database_url, own_redis.url, FAULT_VISIBILITY_TIMEOUT_SECONDS=8, **llm_env(llm))
    first = celery_children(env, concurrency=2, name="doomed", short_visibility=True)
    produced = publish(own_redis.url, range(300))

    assert wait_until(lambda: counts(store, produced)["stored"] >= 80, timeout=60)
    first.kill()
    at_kill = counts(store, produced)
    celery_children(env, concurrency=2, name="survivor", short_visibility=True)
    client = own_redis.client()

    def settled():
        """Every event classified, or nothing left in Redis for a worker to take and every stored row classified."""
        if all_classified(store, produced):
            return True
        figures = safe_counts(store, produced)
        drained = sum(client.llen(queue) for queue in ("bulk", "deep")) == 0 and client.hlen("unacked") == 0
        return bool(figures and drained and figures["classified"] == figures["stored"])

    finished = wait_until(settled, timeout=120)
    figures = counts(store, produced)
    bulk_calls = llm_calls_per_event(store, "bulk")
    deep_calls = llm_calls_per_event(store, "deep")
    report("worker SIGKILL mid-batch", dict(
        figures, stored_at_kill=at_kill["stored"], extra_bulk_calls=sum(n - 1 for n in bulk_calls.values()),
        events_deep_twice=sum(1 for n in deep_calls.values() if n > 1)))

    assert at_kill["stored"] < 300, "the kill came after the batch; nothing was tested"
    assert finished, figures
    # Redis removes a message from its queue when it replies to BRPOP. A main process
    # killed after that reply, before kombu recorded the message as unacked, takes
    # that one message with it, and kombu's Redis transport cannot get it back.
    # Everything the worker had recorded comes back after the visibility timeout.
    assert figures["lost"] <= 1, figures
    assert figures["duplicates"] == 0
    assert all(n == 1 for n in deep_calls.values()), deep_calls
    with store.cursor() as cursor:
        cursor.execute("SELECT count(*) AS n FROM error_events WHERE classifier IS NULL")
        assert cursor.fetchone()["n"] == 0


def pool_children(pid: int) -> list:
    """Process ids of the direct children of `pid` (Linux /proc)."""
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as listing:
        return [int(child) for child in listing.read().split()]


def test_pool_process_sigkill_loses_nothing(store, database_url, own_redis, celery_children, llm):
    """3a. One pool process of a worker is SIGKILLed while it runs a task; the main process lives on."""
    llm.default_triage = llm_stub.Reply(200, llm_stub.completion(llm_stub.TRIAGE_REPLY), delay=0.05)
    # A short provider timeout keeps the fingerprint claim of the killed task short.
    env = base_env(database_url, own_redis.url, **llm_env(llm, LLM_TIMEOUT_SECONDS=5))
    worker = celery_children(env, concurrency=2, name="wounded")
    # One fingerprint per event: every task calls the provider, so a pool process is busy when killed.
    produced = publish(own_redis.url, range(300), kinds=300)

    assert wait_until(lambda: counts(store, produced)["stored"] >= 80, timeout=60)
    children = pool_children(worker.process.pid)
    assert len(children) == 2, children
    os.kill(children[0], signal.SIGKILL)
    at_kill = counts(store, produced)

    finished = wait_until(lambda: all_classified(store, produced), timeout=120)
    figures = counts(store, produced)
    deep_calls = llm_calls_per_event(store, "deep")
    log = worker.log_path.read_text(errors="replace")
    report("pool process SIGKILL mid-batch", dict(
        figures, stored_at_kill=at_kill["stored"], worker_lost_errors=log.count("WorkerLostError"),
        events_deep_twice=sum(1 for n in deep_calls.values() if n > 1)))

    assert at_kill["stored"] < 300, "the kill came after the batch; nothing was tested"
    assert "WorkerLostError" in log  # the killed process was running a task
    assert finished, figures
    assert figures["lost"] == 0
    assert figures["duplicates"] == 0
    assert all(n == 1 for n in deep_calls.values()), deep_calls


def test_worker_survives_redis_stop_mid_task(store, database_url, own_redis, celery_children, llm):
    """Redis is stopped while the worker runs a task; the worker reconnects instead of exiting."""
    llm.default_triage = llm_stub.Reply(200, llm_stub.completion(llm_stub.TRIAGE_REPLY), delay=3)
    env = base_env(database_url, own_redis.url, **llm_env(llm, LLM_TIMEOUT_SECONDS=10))
    worker = celery_children(env, concurrency=1, name="holder")
    publish(own_redis.url, range(2), kinds=2)
    # The first task waits 3 s on the provider, so its message is still unacked when Redis stops.
    assert wait_until(lambda: llm.calls(), timeout=30)
    own_redis.stop()
    time.sleep(2)
    own_redis.start()

    def connections() -> int:
        return worker.log_path.read_text(errors="replace").count("Connected to redis")

    assert wait_until(lambda: connections() >= 2, timeout=60), "the worker did not reconnect"
    after = publish(own_redis.url, range(100, 103), kinds=3)
    stored = wait_until(lambda: after <= stored_ids(store), timeout=60)
    log = worker.log_path.read_text(errors="replace")
    report("redis stopped mid-task", {"reconnected": connections() >= 2,
                                                    "unrecoverable": log.count("Unrecoverable error")})
    assert worker.process.poll() is None, "the worker exited"
    assert "Unrecoverable error" not in log
    assert stored, "the reconnected worker did not store new events"


@pytest.fixture
def embedded_postgres(tmp_path):
    server = EmbeddedPostgres(tmp_path / "pg").start()
    holder = {"server": server}
    yield holder
    if holder["server"] is not None:
        holder["server"].stop()


def test_postgres_restart_mid_run_loses_nothing(embedded_postgres, tmp_path, own_redis, celery_children):
    """4. Our own embedded Postgres is stopped and started again on the same data folder mid-run."""
    url = embedded_postgres["server"].url
    store = Store(url)
    store.migrate()
    env = base_env(url, own_redis.url)
    celery_children(env, concurrency=2)
    produced = publish(own_redis.url, range(400))

    assert wait_until(lambda: (safe_counts(store, produced) or {}).get("stored", 0) >= 60, timeout=60)
    before_stop = counts(store, produced)
    embedded_postgres["server"].stop()
    embedded_postgres["server"] = None
    at_stop = safe_counts(store, produced)
    stopped_at = time.monotonic()
    time.sleep(5)
    embedded_postgres["server"] = EmbeddedPostgres(tmp_path / "pg").start()
    assert embedded_postgres["server"].url == url
    restarted_after = time.monotonic() - stopped_at

    finished = wait_until(lambda: all_classified(store, produced), timeout=150, interval=1.0)
    figures = counts(store, produced)
    report("postgres restarted", dict(figures, stored_before_stop=before_stop["stored"], down_seconds=round(restarted_after, 1)))
    store.close()

    assert at_stop is None, "Postgres still answered after stop()"
    assert before_stop["classified"] < 400, "the restart came after the batch; nothing was tested"
    assert finished, figures
    assert figures["lost"] == 0
    assert figures["duplicates"] == 0


def worker_crashes(log_text: str) -> list:
    """Lines where Celery reports a task that ended in an unexpected exception."""
    return [line for line in log_text.splitlines() if "raised unexpected" in line or "WorkerLostError" in line]


def test_misbehaving_provider_leaves_no_row_unclassified(store, database_url, own_redis, celery_children):
    """5. The provider replies with 429, 500, timeouts, garbage and truncated JSON at random."""
    chaos = ChaosLLMStub(timeout_delay=2.0).start()
    try:
        sweep_interval, stale_after, sweeps, retries = 2, 8, 2, 2
        env = base_env(database_url, own_redis.url, BULK_MAX_RETRIES=retries, LLM_TIMEOUT_SECONDS=1,
                       SWEEP_INTERVAL_SECONDS=sweep_interval, STALE_AFTER_SECONDS=stale_after,
                       SWEEP_MAX_ATTEMPTS=sweeps, **llm_env(chaos))
        workers = celery_children(env, concurrency=2)
        celery_children(env, kind="beat")
        # Every event has its own fingerprint, so each one is sent to the provider.
        produced = publish(own_redis.url, range(150), kinds=150)

        # The budget: each retry waits at most its backoff ceiling (2 s, 4 s, ...) or Retry-After,
        # each call at most the read timeout, then sweeps re-queue and finally apply the rules.
        retry_budget = sum(2.0 * 2 ** attempt for attempt in range(retries)) + (retries + 1) * 2 * 1.0
        budget = sweep_interval + stale_after * sweeps + retry_budget
        finished = wait_until(lambda: all_classified(store, produced), timeout=budget + 120, interval=1.0)
        figures = counts(store, produced)
        with store.cursor() as cursor:
            cursor.execute("SELECT max(extract(epoch FROM classified_at - received_at)) AS worst,"
                           " count(*) FILTER (WHERE classifier = 'rules') AS by_rules FROM error_events")
            row = cursor.fetchone()
            cursor.execute("SELECT count(*) AS n FROM dead_letters")
            dead = cursor.fetchone()["n"]
        crashes = worker_crashes(workers.log_path.read_text(errors="replace"))
        report("provider faults", dict(figures, by_rules=row["by_rules"], dead_letters=dead,
                                       worst_seconds=round(float(row["worst"] or 0), 1),
                                       budget_seconds=round(budget, 1), task_crashes=len(crashes),
                                       served=dict(chaos.served)))

        assert sum(chaos.served[kind] for kind in ("rate_limited", "server_error", "timeout", "garbage",
                                                   "truncated")) > 0
        assert finished, figures
        assert figures["lost"] == 0
        assert figures["duplicates"] == 0
        assert dead == 0
        assert crashes == []
        # Generous slack over the budget for two busy cores; a row the pipeline forgot would never arrive.
        assert float(row["worst"]) <= budget * 3, (row["worst"], budget)
    finally:
        chaos.stop()
