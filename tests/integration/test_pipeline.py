"""The bulk and deep tasks in real worker processes, on the test Redis and Postgres."""

import json

import pytest
import redis

from classifier.context import extract_context
from config import load_settings
from support import llm_stub
from support.helpers import llm_env, wait_for
from tasks.hook import Producer


def make_event(event_id, exc_type="HTTPError", value="503 Server Error: Service Unavailable for url: http://inventory.local/items",
               module="requests.exceptions", function="inventory", handled=False):
    return {
        "event_id": event_id,
        "level": "error",
        "platform": "python",
        "exception": {"values": [{
            "type": exc_type,
            "module": module,
            "value": value,
            "mechanism": {"type": "flask", "handled": handled},
            "stacktrace": {"frames": [{"module": "shop.views", "function": function, "lineno": 12, "in_app": True}]},
        }]},
        "request": {"method": "GET", "url": "http://shop.local/inventory?page=2"},
    }


def publish(redis_url, *events):
    producer = Producer(load_settings({"REDIS_URL": redis_url}), source="test")
    return [producer.publish(extract_context(event)) for event in events]


def row(store, event_id):
    return store.fetchone("get_event", event_id=event_id)


def classified(store, event_id):
    found = row(store, event_id)
    return found if found and found["classified_at"] is not None else None


def test_rules_only_without_provider(store, redis_url, start_worker):
    start_worker()
    [event_id] = publish(redis_url, make_event("a" * 32))

    found = wait_for(lambda: classified(store, event_id), message="classified row")

    assert found["category"] == "EXTERNAL_API"
    assert found["classifier"] == "rules"
    assert found["context"]["request"] == {"method": "GET", "path": "/inventory"}


def test_worker_log_says_rules_only(store, redis_url, start_worker):
    worker = start_worker()
    log = worker.log_path.read_text()
    assert "classifying with the rules only" in log
    assert log.count("classifying with the rules only") == 1


def test_llm_classifies_and_stores_usage(store, redis_url, llm, start_worker):
    start_worker(**llm_env(llm))
    [event_id] = publish(redis_url, make_event("b" * 32))

    found = wait_for(lambda: classified(store, event_id), message="classified row")

    assert found["category"] == "EXTERNAL_API"
    assert found["severity"] == "P1_HIGH"
    assert found["classifier"] == "gemini-2.5-flash"
    stored = store.fetchone("events_by_id", event_ids=[event_id])
    assert stored["summary"] == llm_stub.TRIAGE_REPLY["summary"]
    calls = store.fetchall("costs_by_day", days=1)
    bulk = [call for call in calls if call["model"] == "gemini-2.5-flash"]
    assert bulk[0]["prompt_tokens"] == 120
    assert bulk[0]["completion_tokens"] == 30
    assert float(bulk[0]["cost_usd"]) == pytest.approx(150 * 2.5 / 1_000_000)


def test_deep_analysis_for_new_p1(store, redis_url, llm, start_worker):
    start_worker(**llm_env(llm))
    [event_id] = publish(redis_url, make_event("c" * 32))

    def analysed():
        found = store.fetchone("events_by_id", event_ids=[event_id])
        return found if found and found["deep_status"] == "done" else None

    found = wait_for(analysed, message="deep analysis")
    assert found["root_cause"] == llm_stub.DEEP_REPLY["root_cause"]
    assert found["recommended_action"] == llm_stub.DEEP_REPLY["recommended_action"]
    assert len(llm.calls("deep")) == 1
    deep_request = llm.calls("deep")[0]["body"]
    assert deep_request["model"] == "gpt-4.1"


def test_deep_analysis_once_per_fingerprint(store, redis_url, llm, start_worker):
    start_worker(**llm_env(llm))
    ids = publish(redis_url, *[make_event(f"{index:032x}") for index in range(1, 4)])

    wait_for(lambda: all(classified(store, event_id) for event_id in ids), message="three classified rows")
    wait_for(lambda: len(llm.calls("deep")) >= 1, message="deep call")

    # The first event is classified by the provider; the other two inherit its classification.
    assert len(llm.calls("bulk")) == 1
    assert len(llm.calls("deep")) == 1


def test_429_retries_after_delay(store, redis_url, llm, start_worker):
    llm.queue(llm_stub.rate_limited(retry_after="1"))
    start_worker(**llm_env(llm))
    [event_id] = publish(redis_url, make_event("d" * 32, exc_type="KeyError", value="'sku'", module=None))

    found = wait_for(lambda: classified(store, event_id), message="classified after 429")

    assert found["classifier"] == "gemini-2.5-flash"
    assert found["attempts"] == 1
    assert "429" in found["last_error"]
    assert len(llm.calls("bulk")) == 2


def test_401_falls_back_to_rules(store, redis_url, llm, start_worker):
    llm.queue(llm_stub.unauthorized())
    start_worker(**llm_env(llm))
    [event_id] = publish(redis_url, make_event("e" * 32))

    found = wait_for(lambda: classified(store, event_id), message="classified by rules")

    assert found["classifier"] == "rules"
    assert "401" in found["last_error"]
    assert len(llm.calls("bulk")) == 1


def test_server_errors_exhaust_retries(store, redis_url, llm, start_worker):
    llm.default_triage = llm_stub.server_error()
    start_worker(BULK_MAX_RETRIES=1, **llm_env(llm))
    [event_id] = publish(redis_url, make_event("f" * 32))

    found = wait_for(lambda: classified(store, event_id), timeout=40, message="rules after retries")

    assert found["classifier"] == "rules"
    assert found["attempts"] == 2
    assert len(llm.calls("bulk")) == 2


def test_timeout_is_retried(store, redis_url, llm, start_worker):
    llm.queue(llm_stub.Reply(200, llm_stub.completion(llm_stub.TRIAGE_REPLY), delay=3.0))
    start_worker(LLM_TIMEOUT_SECONDS="0.5", **llm_env(llm))
    [event_id] = publish(redis_url, make_event("1" * 32))

    found = wait_for(lambda: classified(store, event_id), timeout=40, message="classified after timeout")

    assert found["classifier"] == "gemini-2.5-flash"
    assert "timed out" in found["last_error"]


@pytest.mark.parametrize("reply", [
    llm_stub.Reply(200, raw=b"{not json"),
    llm_stub.ok(llm_stub.TRIAGE_REPLY, finish_reason="length"),
    llm_stub.ok({"category": "COSMIC_RAYS", "severity": "P1_HIGH", "summary": "x"}),
], ids=["malformed-json", "finish-length", "unknown-category"])
def test_invalid_reply_retried_once_then_rules(store, redis_url, llm, start_worker, reply):
    llm.default_triage = reply
    start_worker(**llm_env(llm))
    [event_id] = publish(redis_url, make_event("2" * 32))

    found = wait_for(lambda: classified(store, event_id), message="rules after invalid replies")

    assert found["classifier"] == "rules"
    assert "invalid reply" in found["last_error"]
    assert len(llm.calls("bulk")) == 2


def test_fallback_flag_skips_provider(store, redis_url, llm, start_worker):
    start_worker(USE_FALLBACK_CLASSIFIER="true", **llm_env(llm))
    [event_id] = publish(redis_url, make_event("3" * 32))

    found = wait_for(lambda: classified(store, event_id), message="classified by rules")

    assert found["classifier"] == "rules"
    assert llm.calls() == []


def test_worker_disabled_stores_without_classifying(store, redis_url, start_worker):
    worker = start_worker(WORKER_ENABLED="false")
    [event_id] = publish(redis_url, make_event("4" * 32))

    stored = wait_for(lambda: row(store, event_id), message="stored row")
    assert stored["classified_at"] is None
    worker.stop()
    with store.cursor() as cursor:
        cursor.execute("UPDATE error_events SET received_at = now() - interval '1 hour'")

    # With classification enabled again, the sweep that beat runs picks the row up.
    from tasks.triage import sweep_stale

    start_worker()
    assert sweep_stale()["requeued"] == 1
    found = wait_for(lambda: classified(store, event_id), message="classified after sweep")
    assert found["classifier"] == "rules"


def test_redelivery_classifies_once(store, redis_url, llm, start_worker):
    start_worker(**llm_env(llm))
    event = make_event("5" * 32)
    publish(redis_url, event, event, event)

    wait_for(lambda: classified(store, "5" * 32), message="classified row")
    wait_for(lambda: redis.Redis.from_url(redis_url).llen("bulk") == 0, message="queue drained")

    with store.cursor() as cursor:
        cursor.execute("SELECT count(*) AS n FROM error_events WHERE event_id = %s", ("5" * 32,))
        assert cursor.fetchone()["n"] == 1
    assert store.fingerprint_count(row(store, "5" * 32)["fingerprint"]) == 1


def test_invalid_payload_dead_lettered(store, redis_url, start_worker):
    from celery import Celery

    start_worker()
    producer = Celery(set_as_current=False, broker=redis_url)
    producer.send_task("errortriage.ingest_event", args=[{"v": 1, "event_id": "not hex!", "context": {}}], queue="bulk")

    def dead_letters():
        with store.cursor() as cursor:
            cursor.execute("SELECT payload, error FROM dead_letters")
            return cursor.fetchall()

    letters = wait_for(dead_letters, message="dead letter row")
    assert len(letters) == 1
    assert "event_id" in letters[0]["error"]
    assert json.loads(letters[0]["payload"])["event_id"] == "not hex!"


def test_sweep_applies_rules_after_max_sweeps(store, redis_url):
    from tasks import triage

    context = extract_context(make_event("6" * 32))
    store.insert_event("6" * 32, "fp-test", "sig", context)
    with store.cursor() as cursor:
        cursor.execute("UPDATE error_events SET received_at = now() - interval '1 hour', sweeps = 2, last_error = 'provider error 500'")

    result = triage.sweep_stale()

    assert result["ruled"] == 1
    found = store.fetchone("events_by_id", event_ids=["6" * 32])
    assert found["classifier"] == "rules"
    with store.cursor() as cursor:
        cursor.execute("SELECT classification_note FROM error_events")
        note = cursor.fetchone()["classification_note"]
    assert "3 sweeps" in note
    assert "provider error 500" in note


def test_beat_sweeps_stale_rows(store, redis_url, worker_env, start_worker, tmp_path):
    from tasks import processes

    context = extract_context(make_event("7" * 32))
    store.insert_event("7" * 32, "fp-beat", "sig", context)
    with store.cursor() as cursor:
        cursor.execute("UPDATE error_events SET received_at = now() - interval '1 hour'")
    start_worker()
    beat = processes.beat(worker_env, tmp_path / "beat").start()
    try:
        found = wait_for(lambda: classified(store, "7" * 32), timeout=30, message="row classified after beat's sweep")
    finally:
        beat.stop()

    assert found["classifier"] == "rules"
    assert found["sweeps"] == 1
    assert "sweep-stale-events" in (tmp_path / "beat" / "beat.log").read_text()


def test_rejected_value_dead_lettered(store, redis_url, start_worker):
    from celery import Celery

    start_worker()
    # Postgres jsonb cannot hold NUL characters; extract_context replaces them, a hand-made payload may not.
    payload = {"v": 1, "event_id": "8" * 32, "context": {"exceptions": [{"type": "Boom\x00", "value": "nul"}]}}
    Celery(set_as_current=False, broker=redis_url).send_task("errortriage.ingest_event", args=[payload], queue="bulk")

    def dead_letters():
        with store.cursor() as cursor:
            cursor.execute("SELECT error FROM dead_letters")
            return cursor.fetchall()

    [letter] = wait_for(dead_letters, message="dead letter row")
    assert "rejected a value" in letter["error"]
    assert row(store, "8" * 32) is None
