"""The notify and Sentry write-back tasks in a real worker on the notify queue, against loopback receivers."""

import time

import pytest
import redis
from celery import Celery

from classifier.context import extract_context
from config import load_settings
from config.celeryconfig import NOTIFY_TASK, SWEEP_TASK, producer_config
from support import notify_stubs
from support.helpers import wait_for
from tasks.embedded import free_port
from tasks.notify import SENTRY_WRITEBACK_TASK, enqueue_notifications

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
NOTIFY_TABLES = "notify_deliveries, notify_windows, sentry_issue_links, notify_outbox"


@pytest.fixture
def notify_store(store):
    with store.cursor() as cursor:
        cursor.execute(f"TRUNCATE {NOTIFY_TABLES}")
    return store


@pytest.fixture
def slack():
    stub = notify_stubs.SlackStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def pagerduty():
    stub = notify_stubs.PagerDutyStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def sentry():
    stub = notify_stubs.SentryStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def producer(redis_url):
    celery = Celery(set_as_current=False, broker=redis_url)
    yield celery
    celery.close()


def channels_env(slack=None, pagerduty=None, sentry=None, **extra) -> dict:
    env = {}
    if slack:
        env["SLACK_WEBHOOK_URL"] = slack.url
    if pagerduty:
        env.update(PAGERDUTY_EVENTS_URL=pagerduty.url, PAGERDUTY_ROUTING_KEY=ROUTING_KEY)
    if sentry:
        env.update(SENTRY_API_TOKEN=sentry.token, SENTRY_BASE_URL=sentry.base_url,
                   SENTRY_ORG=sentry.org, SENTRY_PROJECT=sentry.project)
    env.update(extra)
    return env


def stored_event(store, event_id, fingerprint, severity="P0_CRITICAL", category="INFRASTRUCTURE",
                 summary="infrastructure: OperationalError: could not connect to server in GET /reports/daily",
                 root_cause=None, action=None):
    """Store a classified event the way the bulk task does, and its deep analysis when given."""
    event = {
        "event_id": event_id, "level": "error", "environment": "production", "release": "shop@4.2.0",
        "exception": {"values": [{"type": "OperationalError", "module": "psycopg2", "value": "could not connect to server"}]},
    }
    store.insert_event(event_id, fingerprint, "sig", extract_context(event))
    assert store.fetchone("save_classification", event_id=event_id, category=category, severity=severity,
                          summary=summary, classifier="rules", note=None, prompt_tokens=0, completion_tokens=0)
    if root_cause:
        assert store.fetchone("claim_deep", event_id=event_id)
        store.execute("save_deep", event_id=event_id, root_cause=root_cause, recommended_action=action,
                      classifier="gpt-4.1", status="done", prompt_tokens=0, completion_tokens=0, error=None)
    return event_id


def deliveries(store, event_id):
    return {(row["channel"], row["stage"]): row for row in store.fetchall("notify_deliveries_of_event", event_id=event_id)}


def settled(store, event_id, channel, stage="classified"):
    row = deliveries(store, event_id).get((channel, stage))
    return row if row and row["status"] in ("sent", "folded", "failed") else None


def succeeded(worker, task_name) -> int:
    """Number of runs of `task_name` the worker logged as succeeded."""
    return sum(1 for line in worker.log_path.read_text().splitlines() if f"{task_name}[" in line and " succeeded " in line)


def notify(producer, event_id, stage="classified", task=NOTIFY_TASK):
    producer.send_task(task, args=[event_id, stage], queue="notify")


def test_p0_goes_to_slack_and_pagerduty(notify_store, producer, slack, pagerduty, start_worker):
    start_worker(queues="notify", **channels_env(slack, pagerduty))
    event_id = stored_event(notify_store, "a" * 32, "fp-db-down")

    notify(producer, event_id)
    wait_for(lambda: slack.messages() and pagerduty.triggers(), message="Slack message and PagerDuty trigger")
    wait_for(lambda: settled(notify_store, event_id, "pagerduty"), message="PagerDuty delivery row")

    [text] = slack.messages()
    for part in ("P0_CRITICAL", "INFRASTRUCTURE", "could not connect to server", "production", "shop@4.2.0",
                 "Events with this fingerprint: 1", event_id):
        assert part in text
    [trigger] = pagerduty.triggers()
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "errortriage-fp-db-down"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["summary"].startswith("[P0_CRITICAL] INFRASTRUCTURE: ")
    assert trigger["payload"]["custom_details"]["category"] == "INFRASTRUCTURE"
    assert trigger["payload"]["source"] == "production"
    assert {row["status"] for row in deliveries(notify_store, event_id).values()} == {"sent"}


def test_cooldown_folds_repeats_into_next_message(notify_store, producer, slack, start_worker):
    start_worker(queues="notify", **channels_env(slack, NOTIFY_COOLDOWN_SECONDS="3"))
    first, second, third = (stored_event(notify_store, f"{n:032x}", "fp-repeat", severity="P1_HIGH") for n in (1, 2, 3))

    for event_id in (first, second, third):
        notify(producer, event_id)
    wait_for(lambda: all(settled(notify_store, e, "slack") for e in (first, second, third)), message="three rows")
    assert len(slack.messages()) == 1
    assert [settled(notify_store, e, "slack")["status"] for e in (first, second, third)] == ["sent", "folded", "folded"]

    time.sleep(3.2)
    fourth = stored_event(notify_store, f"{4:032x}", "fp-repeat", severity="P1_HIGH")
    notify(producer, fourth)
    wait_for(lambda: len(slack.messages()) == 2, message="the message after the cool-down")
    assert "2 repeats folded in since the last message" in slack.messages()[1]
    assert "folded in" not in slack.messages()[0]


def test_redelivery_sends_once(notify_store, producer, redis_url, slack, pagerduty, start_worker):
    start_worker(queues="notify", **channels_env(slack, pagerduty, NOTIFY_COOLDOWN_SECONDS="0.01"))
    event_id = stored_event(notify_store, "b" * 32, "fp-redelivered")

    for _ in range(3):
        notify(producer, event_id)
    wait_for(lambda: settled(notify_store, event_id, "pagerduty") and settled(notify_store, event_id, "slack"),
             message="delivery rows")
    wait_for(lambda: redis.Redis.from_url(redis_url).llen("notify") == 0, message="queue drained")
    time.sleep(1.0)

    # A tiny cool-down would let a second send through if idempotency relied on the window alone.
    assert len(slack.messages()) == 1
    assert len(pagerduty.triggers()) == 1


def test_thresholds(notify_store, producer, slack, pagerduty, start_worker):
    start_worker(queues="notify", **channels_env(slack, pagerduty))
    low = stored_event(notify_store, "c" * 32, "fp-low", severity="P2_MEDIUM", category="VALIDATION")
    high = stored_event(notify_store, "d" * 32, "fp-high", severity="P1_HIGH", category="RATE_LIMIT")
    critical = stored_event(notify_store, "e" * 32, "fp-critical", severity="P0_CRITICAL")

    # One worker process takes the tasks in order: once the last one was handled, so were the others.
    for event_id in (low, high, critical):
        notify(producer, event_id)
    wait_for(lambda: settled(notify_store, critical, "pagerduty"), message="the P0 delivery")

    texts = slack.messages()
    assert len(texts) == 2
    assert "RATE_LIMIT" in texts[0]
    assert "INFRASTRUCTURE" in texts[1]
    assert [trigger["dedup_key"] for trigger in pagerduty.triggers()] == ["errortriage-fp-critical"]
    assert deliveries(notify_store, low) == {}


def test_slack_429_waits_for_retry_after(notify_store, producer, slack, start_worker):
    slack.queue(notify_stubs.slack_rate_limited(retry_after="2"))
    start_worker(queues="notify", **channels_env(slack))
    event_id = stored_event(notify_store, "f" * 32, "fp-throttled")

    notify(producer, event_id)
    row = wait_for(lambda: settled(notify_store, event_id, "slack"), message="Slack delivered after 429")

    calls = slack.calls("POST")
    assert len(calls) == 2
    assert calls[1]["at"] - calls[0]["at"] >= 1.9
    assert row["status"] == "sent"
    assert len(slack.messages()) == 2  # the refused one and the delivered one


def test_permanent_errors_logged_once_and_not_retried(notify_store, producer, slack, pagerduty, start_worker):
    slack.queue(notify_stubs.no_service(), notify_stubs.no_service())
    pagerduty.queue(notify_stubs.pagerduty_invalid())
    worker = start_worker(queues="notify", **channels_env(slack, pagerduty))
    first = stored_event(notify_store, "1" * 32, "fp-one")
    second = stored_event(notify_store, "2" * 32, "fp-two", severity="P1_HIGH")

    notify(producer, first)
    notify(producer, second)
    wait_for(lambda: settled(notify_store, second, "slack") and settled(notify_store, first, "pagerduty"),
             message="failed deliveries")
    time.sleep(1.0)

    assert len(slack.calls("POST")) == 2  # one per event, no retry
    assert len(pagerduty.calls("POST")) == 1
    assert settled(notify_store, first, "slack")["status"] == "failed"
    assert "404" in settled(notify_store, first, "slack")["last_error"]
    assert settled(notify_store, first, "pagerduty")["status"] == "failed"
    log = worker.log_path.read_text()
    assert log.count("slack delivery failed permanently") == 1
    assert log.count("pagerduty delivery failed permanently") == 1
    assert notify_stubs.SlackStub.SECRET_PATH not in log
    assert ROUTING_KEY not in log


def test_analysed_stage_carries_root_cause(notify_store, producer, slack, start_worker):
    start_worker(queues="notify", **channels_env(slack))
    event_id = stored_event(notify_store, "3" * 32, "fp-deep", root_cause="The primary database is down.",
                            action="Fail over to the replica.")

    notify(producer, event_id, "classified")
    notify(producer, event_id, "analysed")
    wait_for(lambda: settled(notify_store, event_id, "slack", "analysed"), message="analysed delivery")

    texts = slack.messages()
    assert len(texts) == 2
    assert "Root cause analysed" in texts[1]
    assert "*Root cause:* The primary database is down." in texts[1]
    assert "*Recommended action:* Fail over to the replica." in texts[1]


def test_sentry_writeback_waits_for_ingestion(notify_store, producer, sentry, start_worker):
    start_worker(queues="notify", **channels_env(sentry=sentry, SENTRY_SET_PRIORITY="true"))
    event_id = stored_event(notify_store, "4" * 32, "fp-sentry", severity="P1_HIGH")

    notify(producer, event_id, task=SENTRY_WRITEBACK_TASK)
    wait_for(lambda: sentry.calls("GET", contains=event_id), message="first lookup")
    sentry.ingest(event_id, "4242")
    wait_for(lambda: settled(notify_store, event_id, "sentry_comment"), timeout=30, message="comment delivery")
    wait_for(lambda: settled(notify_store, event_id, "sentry_priority"), message="priority delivery")

    assert len(sentry.calls("GET", contains=event_id)) >= 2  # 404 first, then the groupID
    assert sentry.priorities == {"4242": "high"}
    [text] = sentry.comments["4242"]
    assert "errortriage: INFRASTRUCTURE, P1_HIGH" in text
    assert "Summary: infrastructure: OperationalError" in text

    # Another event of the same fingerprint: no second comment, no second priority update.
    other = stored_event(notify_store, "5" * 32, "fp-sentry", severity="P1_HIGH")
    sentry.ingest(other, "4242")
    notify(producer, other, task=SENTRY_WRITEBACK_TASK)
    wait_for(lambda: settled(notify_store, other, "sentry_comment"), message="second comment row")
    assert settled(notify_store, other, "sentry_comment")["status"] == "folded"
    assert len(sentry.comments["4242"]) == 1
    assert len(sentry.calls("PUT")) == 1


def test_sentry_priority_off_by_default(notify_store, producer, sentry, start_worker):
    start_worker(queues="notify", **channels_env(sentry=sentry))
    event_id = stored_event(notify_store, "6" * 32, "fp-nopriority")
    sentry.ingest(event_id, "77")

    notify(producer, event_id, task=SENTRY_WRITEBACK_TASK)
    wait_for(lambda: settled(notify_store, event_id, "sentry_comment"), message="comment")

    assert sentry.calls("PUT") == []
    assert len(sentry.comments["77"]) == 1


def test_sentry_comment_403_disables_comments(notify_store, producer, sentry, start_worker):
    sentry.comments_forbidden = True
    worker = start_worker(queues="notify", **channels_env(sentry=sentry))
    first = stored_event(notify_store, "7" * 32, "fp-a")
    second = stored_event(notify_store, "8" * 32, "fp-b")
    sentry.ingest(first, "1")
    sentry.ingest(second, "2")

    notify(producer, first, task=SENTRY_WRITEBACK_TASK)
    wait_for(lambda: settled(notify_store, first, "sentry_comment"), message="refused comment")
    notify(producer, second, task=SENTRY_WRITEBACK_TASK)
    wait_for(lambda: succeeded(worker, SENTRY_WRITEBACK_TASK) == 2, message="second task handled")

    assert len(sentry.calls("POST")) == 1
    assert settled(notify_store, first, "sentry_comment")["status"] == "failed"
    assert deliveries(notify_store, second) == {}
    log = worker.log_path.read_text()
    assert log.count("comments are off until the worker restarts") == 1
    assert sentry.token not in log


def test_sentry_rate_limit_headers_respected(notify_store, producer, sentry, start_worker):
    sentry.queue(notify_stubs.sentry_rate_limited(retry_after="2"))
    start_worker(queues="notify", **channels_env(sentry=sentry))
    event_id = stored_event(notify_store, "9" * 32, "fp-limited")
    sentry.ingest(event_id, "99")

    notify(producer, event_id, task=SENTRY_WRITEBACK_TASK)
    row = wait_for(lambda: settled(notify_store, event_id, "sentry_comment"), message="comment after 429")

    assert row["status"] == "sent"
    calls = sentry.calls()
    assert calls[0]["method"] == "GET"
    assert len(calls) >= 3
    assert calls[1]["at"] - calls[0]["at"] >= 1.9


def test_slack_links_the_sentry_issue(notify_store, producer, slack, sentry, start_worker):
    start_worker(queues="notify", **channels_env(slack, sentry=sentry))
    event_id = stored_event(notify_store, "ab" * 16, "fp-linked")
    sentry.ingest(event_id, "31337")

    notify(producer, event_id)
    wait_for(lambda: slack.messages(), message="Slack message")

    assert f"<{sentry.base_url}/organizations/acme/issues/31337/|Open the Sentry issue>" in slack.messages()[0]


def test_outbox_keeps_unpublished_notifications(notify_store, database_url, producer, slack, sentry, start_worker):
    event_id = stored_event(notify_store, "c" * 32, "fp-outbox")
    channels = channels_env(slack, sentry=sentry)
    config = load_settings(dict(channels, DATABASE_URL=database_url))
    # No server listens on this loopback port, so every publish fails.
    unreachable = Celery(set_as_current=False)
    unreachable.conf.update(producer_config(load_settings({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})))

    enqueue_notifications(event_id, "classified", config=config, celery_app=unreachable)

    outbox = notify_store.fetchall("notify_outbox_oldest", limit=10)
    assert sorted(row["task"] for row in outbox) == sorted([NOTIFY_TASK, SENTRY_WRITEBACK_TASK])
    assert slack.messages() == []

    # The beat sweep, run by a real worker, queues them once the broker takes messages.
    start_worker(queues="bulk,notify", **channels)
    producer.send_task(SWEEP_TASK, queue="bulk")
    wait_for(lambda: slack.messages(), message="Slack message after the sweep")
    wait_for(lambda: not notify_store.fetchall("notify_outbox_oldest", limit=10), message="empty outbox")
    [text] = slack.messages()
    assert event_id in text
