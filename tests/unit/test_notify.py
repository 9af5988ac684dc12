"""Message formats, thresholds, the Sentry client and enqueue_notifications, without a worker."""

import logging
import time

import pytest

from config import load_settings
from support import notify_stubs
from tasks import notify, sentry_api
from tasks.sentry_api import SentryAPI, SentryAPIError

EVENT = {
    "event_id": "a" * 32,
    "fingerprint": "f" * 40,
    "category": "EXTERNAL_API",
    "severity": "P1_HIGH",
    "summary": "external api: HTTPError: 503 <Service Unavailable> & more in GET /inventory",
    "classifier": "rules",
    "event_count": 7,
    "root_cause": None,
    "recommended_action": None,
    "context": {"environment": "production", "release": "shop@1.0"},
}


def test_slack_message_has_the_fields_and_escapes_markup():
    text = notify.slack_message(EVENT, "classified", 3, "https://sentry.example/organizations/acme/issues/9/")["text"]
    assert "P1_HIGH EXTERNAL_API" in text
    assert "&lt;Service Unavailable&gt; &amp; more" in text
    assert "Events with this fingerprint: 7; 3 repeats folded in" in text
    assert "in production (release shop@1.0)" in text
    assert "<https://sentry.example/organizations/acme/issues/9/|Open the Sentry issue>" in text
    assert "Root cause" not in text


def test_slack_message_without_folds_or_link():
    text = notify.slack_message(EVENT, "classified", 0)["text"]
    assert "folded" not in text
    assert "Sentry issue" not in text


@pytest.mark.parametrize("severity, expected", [
    ("P0_CRITICAL", "critical"), ("P1_HIGH", "error"), ("P2_MEDIUM", "warning"), ("P3_LOW", "info"),
])
def test_pagerduty_severity_mapping(severity, expected):
    body = notify.pagerduty_event(dict(EVENT, severity=severity), "classified", "key", 0)
    assert body["payload"]["severity"] == expected


def test_pagerduty_summary_and_dedup_key_within_limits():
    event = dict(EVENT, summary="x" * 5000, fingerprint="y" * 400)
    body = notify.pagerduty_event(event, "classified", "key", 2)
    assert len(body["payload"]["summary"]) == 1024
    assert body["payload"]["summary"].endswith("...")
    assert len(body["dedup_key"]) == 255
    assert body["dedup_key"] == notify.pagerduty_dedup_key(event["fingerprint"])
    assert body["payload"]["custom_details"]["folded_repeats"] == 2
    assert "root_cause" not in body["payload"]["custom_details"]


def test_pagerduty_stub_accepts_our_trigger():
    stub = notify_stubs.PagerDutyStub().start()
    try:
        notify.send_pagerduty(stub.url, notify.pagerduty_event(EVENT, "classified", "k" * 32, 0))
        assert stub.triggers()[0]["dedup_key"] == "errortriage-" + "f" * 40
    finally:
        stub.stop()


@pytest.mark.parametrize("severity, threshold, expected", [
    ("P0_CRITICAL", "P1_HIGH", True), ("P1_HIGH", "P1_HIGH", True), ("P2_MEDIUM", "P1_HIGH", False),
    ("P1_HIGH", "P0_CRITICAL", False), (None, "P3_LOW", False),
])
def test_threshold(severity, threshold, expected):
    assert notify.at_or_above(severity, threshold) is expected


def test_priority_mapping():
    assert [sentry_api.issue_priority(s) for s in ("P0_CRITICAL", "P1_HIGH", "P2_MEDIUM", "P3_LOW")] == [
        "high", "high", "medium", "low"]


class _RecordingApp:
    def __init__(self):
        self.sent = []

    def send_task(self, name, args, queue):
        self.sent.append((name, args, queue))


def test_enqueue_is_a_noop_without_channels():
    recorder = _RecordingApp()
    notify.enqueue_notifications("a" * 32, "classified", config=load_settings({}), celery_app=recorder)
    assert recorder.sent == []


def test_enqueue_sends_each_configured_task_to_the_notify_queue():
    recorder = _RecordingApp()
    config = load_settings({"SLACK_WEBHOOK_URL": "http://127.0.0.1:9/hook", "SENTRY_API_TOKEN": "t" * 20,
                            "SENTRY_ORG": "acme", "SENTRY_PROJECT": "shop", "NOTIFY_QUEUE": "alerts"})
    notify.enqueue_notifications("a" * 32, "analysed", config=config, celery_app=recorder)
    assert recorder.sent == [
        ("errortriage.notify", ["a" * 32, "analysed"], "alerts"),
        ("errortriage.sentry_writeback", ["a" * 32, "analysed"], "alerts"),
    ]


def test_enqueue_never_raises_on_broker_failure(caplog):
    class Broken:
        def send_task(self, *args, **kwargs):
            raise ConnectionError("broker down")

    config = load_settings({"PAGERDUTY_ROUTING_KEY": "k" * 32})
    with caplog.at_level(logging.WARNING):
        notify.enqueue_notifications("a" * 32, "classified", config=config, celery_app=Broken())
    assert "could not queue notifications" in caplog.text


def test_slack_connection_error_does_not_leak_the_url():
    with pytest.raises(notify.DeliveryError) as caught:
        notify.send_slack("http://127.0.0.1:9/services/T1/B1/supersecretpart", {"text": "x"})
    assert "supersecretpart" not in str(caught.value)
    assert not caught.value.permanent


@pytest.fixture
def sentry():
    sentry_api.reset_rate_limit()
    stub = notify_stubs.SentryStub().start()
    yield stub, SentryAPI(stub.base_url, stub.token, stub.org, stub.project)
    stub.stop()
    sentry_api.reset_rate_limit()


def test_find_issue_is_none_until_ingested(sentry):
    stub, client = sentry
    assert client.find_issue("b" * 32) is None
    stub.ingest("b" * 32, "123")
    assert client.find_issue("b" * 32) == "123"


def test_comment_403_is_permanent(sentry):
    stub, client = sentry
    stub.comments_forbidden = True
    with pytest.raises(SentryAPIError) as caught:
        client.add_comment("5", "hello")
    assert caught.value.status == 403
    assert caught.value.permanent


def test_old_issue_path_is_tried_after_404(sentry):
    stub, client = sentry
    stub.queue(notify_stubs.Reply(404, {"detail": "Not found"}), notify_stubs.Reply(200, {"id": "5"}))
    client.set_priority("5", "low")
    assert [call["path"] for call in stub.calls("PUT")] == ["/api/0/organizations/acme/issues/5/", "/api/0/issues/5/"]


def test_rate_limit_headers_pause_further_calls(sentry):
    stub, client = sentry
    stub.queue(notify_stubs.Reply(200, {"groupID": "1"}, {"X-Sentry-Rate-Limit-Remaining": "0",
                                                        "X-Sentry-Rate-Limit-Reset": str(int(time.time()) + 30)}))
    assert client.find_issue("c" * 32) == "1"
    with pytest.raises(SentryAPIError) as caught:
        client.find_issue("c" * 32)
    assert 20 < caught.value.retry_after <= 31
    assert len(stub.calls()) == 1  # the second call never left the process


def test_429_gives_retry_after(sentry):
    stub, client = sentry
    stub.queue(notify_stubs.sentry_rate_limited(retry_after="3"))
    with pytest.raises(SentryAPIError) as caught:
        client.find_issue("d" * 32)
    assert caught.value.status == 429
    assert not caught.value.permanent
    assert caught.value.retry_after == pytest.approx(3, abs=0.5)
