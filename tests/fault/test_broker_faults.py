"""Broker faults seen from the app: Redis refusing connections, Redis frozen, and the replay command."""

import base64
import json
import subprocess
import sys
import time

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from faultkit import base_env, counts, report, stored_ids, wait_until
from tasks import broker
from tasks.spool import Spool

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 30
FREEZE_SECONDS = 10


def test_redis_refusing_for_30s_loses_nothing(store, database_url, own_redis, celery_children, start_app, tmp_path):
    """1. Redis refuses connections for 30 s while the app raises 2,000 errors."""
    env = base_env(database_url, own_redis.url, SPOOL_DIR=tmp_path / "spool")
    celery_children(env)
    app = start_app(env)
    warm_up = app.call("burst", count=1, label="warm-up")  # starts the hook's threads with Redis up
    assert app.call("drain", timeout=30)["drained"]

    own_redis.stop()
    outage_started = time.monotonic()
    assert own_redis.refuses()
    produced, hook_calls = set(), 0
    for round_number in range(10):
        answer = app.call("burst", count=200, label=f"outage-{round_number}")
        produced.update(answer["event_ids"])
        hook_calls += answer["hook_calls"]
        time.sleep(1.0)
    during = app.call("counters")["counters"]
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
    own_redis.start()

    drained = app.call("drain", timeout=60)
    assert drained["drained"], drained
    outage_ids = set(produced)
    produced.update(warm_up["event_ids"])
    everything = wait_until(lambda: produced <= stored_ids(store), timeout=120)
    figures = counts(store, produced)
    hook_figures = drained["counters"]
    report("redis refused 30s", dict(figures, spooled=hook_figures["spooled"], replayed=hook_figures["replayed"],
                                     hook_errors=hook_figures["hook_errors"]))

    assert len(outage_ids) == 2000
    assert hook_calls == 2000
    assert during["spooled"] == 2000, during
    assert everything, figures
    assert figures["lost"] == 0
    assert figures["duplicates"] == 0
    assert hook_figures["hook_errors"] == 0
    assert hook_figures["replayed"] == 2000
    assert all(hook_figures[name] == 0 for name in hook_figures if name.startswith("dropped_"))
    assert wait_until(lambda: counts(store, produced)["classified"] == counts(store, produced)["stored"], 60)


def test_frozen_redis_never_slows_capture(store, database_url, own_redis, celery_children, start_app, tmp_path):
    """2. Redis stopped with SIGSTOP for 10 s: capture_exception costs what it costs with Redis up."""
    env = base_env(database_url, own_redis.url, SPOOL_DIR=tmp_path / "spool")
    celery_children(env)
    app = start_app(env)
    warm_up = app.call("burst", count=20, label="warm-up")
    assert app.call("drain", timeout=30)["drained"]

    up = app.call("burst", count=500, label="redis-up")
    app.call("drain", timeout=30)
    own_redis.freeze()
    frozen_at = time.monotonic()
    try:
        frozen = app.call("burst", count=500, label="redis-frozen")
        # Every capture above returned while Redis was still stopped.
        still_frozen = time.monotonic() - frozen_at < FREEZE_SECONDS
        time.sleep(max(0.0, FREEZE_SECONDS - (time.monotonic() - frozen_at)))
    finally:
        own_redis.thaw()

    produced = set(up["event_ids"]) | set(frozen["event_ids"]) | set(warm_up["event_ids"])
    drained = app.call("drain", timeout=60)
    assert drained["drained"], drained
    everything = wait_until(lambda: produced <= stored_ids(store), timeout=120)
    figures = counts(store, produced)
    hook_ratio = frozen["hook_ns"]["median"] / max(1, up["hook_ns"]["median"])
    hook_p95_ratio = frozen["hook_ns"]["p95"] / max(1, up["hook_ns"]["p95"])
    capture_ratio = frozen["capture_ns"]["median"] / max(1, up["capture_ns"]["median"])
    report("redis frozen 10s", dict(
        figures, hook_median_ratio=round(hook_ratio, 2), hook_p95_ratio=round(hook_p95_ratio, 2),
        capture_median_ratio=round(capture_ratio, 2), hook_median_up_us=round(up["hook_ns"]["median"] / 1000, 1),
        hook_median_frozen_us=round(frozen["hook_ns"]["median"] / 1000, 1),
        spooled=drained["counters"]["spooled"], replayed=drained["counters"]["replayed"],
        hook_errors=drained["counters"]["hook_errors"]))

    assert still_frozen
    # Generous slack: a request thread that waited on the broker even once per
    # hundred events would be thousands of times slower at the 95th percentile.
    assert hook_ratio < 5, (up["hook_ns"], frozen["hook_ns"])
    assert hook_p95_ratio < 10, (up["hook_ns"], frozen["hook_ns"])
    assert capture_ratio < 5, (up["capture_ns"], frozen["capture_ns"])
    assert everything, figures
    assert figures["lost"] == 0
    assert drained["counters"]["hook_errors"] == 0
    assert drained["counters"]["spooled"] > 0  # the freeze was noticed and bridged by the spool


def test_unconfirmed_ack_frees_prefetch_slot(own_redis):
    """kombu level: an ack that times out while Redis is stopped still lets the channel take the next message."""
    broker.install()
    options = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    queue = Queue("ack-probe", Exchange("ack-probe", type="direct"), routing_key="ack-probe")
    received = []
    with Connection(own_redis.url, transport_options=options) as connection:
        channel = connection.channel()
        assert isinstance(channel.qos, broker.AckSafeQoS)
        producer = Producer(channel)
        for number in (1, 2):
            producer.publish({"n": number}, exchange=queue.exchange, routing_key="ack-probe", declare=[queue])
        channel.basic_qos(0, 1, False)
        with Consumer(channel, [queue], callbacks=[lambda body, message: received.append((body["n"], message))]):
            connection.drain_events(timeout=5)
            assert [n for n, _ in received] == [1]
            own_redis.freeze()
            try:
                with pytest.raises(Exception):
                    received[0][1].ack()
            finally:
                own_redis.thaw()
            # Without the fix the failed ack keeps the only slot and this times out.
            assert channel.qos.can_consume()
            connection.drain_events(timeout=5)
            assert [n for n, _ in received] == [1, 2]
            received[1][1].ack()
            assert channel.qos.can_consume()


def test_collected_channel_close_does_not_raise(own_redis):
    """kombu level: closing a channel Celery already collected logs the failed return of an unacked message instead of raising."""
    broker.install()
    queue = Queue("hand-back", Exchange("hand-back", type="direct"), routing_key="hand-back")
    delivered = []
    connection = Connection(own_redis.url, transport_options={"socket_timeout": 1, "socket_connect_timeout": 1})
    channel = connection.default_channel
    Producer(channel).publish({"n": 1}, exchange=queue.exchange, routing_key="hand-back", declare=[queue])
    channel.basic_qos(0, 1, False)
    Consumer(channel, [queue], callbacks=[lambda body, message: delivered.append(message)]).consume()
    connection.drain_events(timeout=5)
    assert len(delivered) == 1
    own_redis.stop()
    # The state Celery leaves after collect() on a lost connection: pools dropped and the
    # transport detached from its connection. kombu's own QoS raises AttributeError here,
    # which Celery reports as "Unrecoverable error" and the worker exits.
    channel._disconnect_pools()
    connection.transport.client = None

    channel.close()

    assert channel.qos._delivered == {}


def test_worker_survives_unconfirmed_acks(store, database_url, own_redis, celery_children, start_app, tmp_path):
    """Redis stopped for 6 s, longer than the worker's socket timeout, while it works through a backlog."""
    env = base_env(database_url, own_redis.url, SPOOL_DIR=tmp_path / "spool", WORKER_BROKER_SOCKET_TIMEOUT_SECONDS=2)
    app = start_app(env)
    client = own_redis.client()
    # The backlog is queued before the worker starts, so it is there at every stop
    # however slow the machine is.
    produced = set()
    for round_number in range(3):
        # Bursts of 1,000 fit the hook's queues (HOOK_QUEUE_SIZE), so none is dropped.
        produced.update(app.call("burst", count=1000, label=f"backlog-{round_number}")["event_ids"])
        assert app.call("drain", timeout=60)["drained"]
    assert client.llen("bulk") == 3000
    worker = celery_children(env, concurrency=2)
    stops, backlogs = 0, []

    def noticed() -> bool:
        return "Redis did not" in worker.log_path.read_text(errors="replace")

    # A stop counts when it falls on an ack or a delivery, not on a BRPOP
    # that is waiting anyway. Under CPU load many stops miss, so try up to eight.
    while stops < 8 and not noticed():
        before = client.llen("bulk")
        assert wait_until(lambda: client.llen("bulk") <= before - 20, timeout=60), "the worker took no messages"
        backlogs.append(client.llen("bulk"))
        own_redis.freeze()
        time.sleep(6)
        own_redis.thaw()
        stops += 1

    everything = wait_until(lambda: produced <= stored_ids(store), timeout=120)
    figures = counts(store, produced)
    log = worker.log_path.read_text(errors="replace")
    report("acks unanswered", dict(figures, stops=stops, backlogs=backlogs,
                                   unconfirmed_acks=log.count("Redis did not confirm"),
                                   unrecorded_deliveries=log.count("Redis did not record")))
    assert noticed()
    # Without AckSafeQoS two unconfirmed acks leave the worker idle with the backlog still queued.
    assert everything, figures
    assert client.llen("bulk") == 0
    assert figures["duplicates"] == 0


def queued_event_ids(client, queue="bulk") -> list:
    """Event ids of the task messages waiting in a Redis list, oldest first."""
    ids = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        message = json.loads(raw)
        body = base64.b64decode(message["body"]) if message.get("properties", {}).get("body_encoding") == "base64" \
            else message["body"].encode()
        args = json.loads(body)[0]
        ids.append(args[0]["event_id"])
    return ids


def test_replay_command_sends_what_an_exited_app_spooled(own_redis, database_url, start_app, tmp_path):
    """The app exits while Redis is down; `errortriage replay-spool` sends its spool once Redis is back."""
    spool_dir = tmp_path / "spool"
    env = base_env(database_url, own_redis.url, SPOOL_DIR=spool_dir)
    own_redis.stop()
    app = start_app(env)
    produced = app.call("burst", count=100, label="offline")["event_ids"]
    app.close()
    spooled = Spool(spool_dir, 10**9).pending()
    assert len(spooled) == 100

    failed = subprocess.run([sys.executable, "-m", "tasks.cli", "replay-spool"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert failed.returncode == 1
    assert "broker failed" in failed.stderr
    assert len(Spool(spool_dir, 10**9).pending()) == 100

    own_redis.start()
    result = subprocess.run([sys.executable, "-m", "tasks.cli", "replay-spool"], env=env, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert "replayed 100 events" in result.stdout
    assert Spool(spool_dir, 10**9).pending() == []
    queued = queued_event_ids(own_redis.client())
    # Oldest first: the queue has them in the order the app raised them.
    assert queued == produced
    report("replay-spool command", {"produced": len(produced), "queued": len(queued), "duplicates": 0,
                                    "lost": len(set(produced) - set(queued))})
