"""add_preliminary_tags: the rules tier's tags on the event, with the real sentry-sdk and a local envelope receiver."""

import time

import pytest
import sentry_sdk

from tasks import preliminary_tags
from tasks.demo_app import LocalServer, SentryIngestHandler
from tasks.preliminary_tags import add_preliminary_tags

RATE_LIMITED = {
    "event_id": "a" * 32,
    "level": "error",
    "exception": {"values": [{"type": "RateLimitError", "module": "openai", "value": "Error code: 429 rate limit"}]},
}


@pytest.fixture
def tags_on():
    preliminary_tags.configure(True)
    yield
    preliminary_tags.configure(None)


def test_tags_added_to_a_dict(tags_on):
    event = dict(RATE_LIMITED, tags={"team": "shop"})
    assert add_preliminary_tags(event) is event
    assert event["tags"] == {"team": "shop", "triage.category": "RATE_LIMIT", "triage.severity": "P1_HIGH"}


def test_tags_added_to_pairs_and_to_no_tags(tags_on):
    pairs = dict(RATE_LIMITED, tags=[["team", "shop"], ["triage.category", "stale"]])
    add_preliminary_tags(pairs)
    assert pairs["tags"] == [["team", "shop"], ["triage.category", "RATE_LIMIT"], ["triage.severity", "P1_HIGH"]]
    bare = dict(RATE_LIMITED)
    add_preliminary_tags(bare)
    assert bare["tags"]["triage.category"] == "RATE_LIMIT"


@pytest.mark.parametrize("junk", [None, "text", 42, {"exception": "not a dict"}, {"tags": "odd", "message": 5}])
def test_never_raises(tags_on, junk):
    assert add_preliminary_tags(junk) is junk


def test_transactions_untouched(tags_on):
    transaction = {"type": "transaction", "tags": {}}
    add_preliminary_tags(transaction)
    assert transaction["tags"] == {}


def test_off_by_default(monkeypatch):
    monkeypatch.delenv("SENTRY_PRELIMINARY_TAGS", raising=False)
    preliminary_tags.configure(None)
    event = dict(RATE_LIMITED)
    add_preliminary_tags(event)
    assert "tags" not in event
    preliminary_tags.configure(None)


def test_cheap(tags_on):
    started = time.perf_counter()
    for _ in range(200):
        add_preliminary_tags(dict(RATE_LIMITED, tags={}))
    assert (time.perf_counter() - started) / 200 < 0.005


def _send_error(server, before_send):
    sentry_sdk.init(dsn=f"http://public@127.0.0.1:{server.port}/1", before_send=before_send,
                    default_integrations=False, transport_queue_size=10)
    try:
        try:
            {}["missing"]
        except KeyError:
            sentry_sdk.capture_exception()
        sentry_sdk.flush(5)
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()


def test_tags_reach_the_transport(tags_on):
    server = LocalServer(SentryIngestHandler).start()
    try:
        _send_error(server, lambda event, hint: add_preliminary_tags(event))
        [event] = server.server.events
    finally:
        server.stop()
    assert event["tags"]["triage.category"] == "LOGIC_ERROR"
    # capture_exception marks the error handled, which lowers the rules severity by one step.
    assert event["tags"]["triage.severity"] == "P3_LOW"


def test_no_tags_reach_the_transport_when_off():
    preliminary_tags.configure(False)
    server = LocalServer(SentryIngestHandler).start()
    try:
        _send_error(server, lambda event, hint: add_preliminary_tags(event))
        [event] = server.server.events
    finally:
        server.stop()
        preliminary_tags.configure(None)
    assert "triage.category" not in (event.get("tags") or {})
