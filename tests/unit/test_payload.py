import json
import re
from pathlib import Path

import pytest

from classifier.context import content_event_id, extract_context
from classifier.errors import InvalidEventError
from tasks.payload import PAYLOAD_VERSION, build_payload, check_payload

EVENTS_DIR = Path(__file__).resolve().parent.parent / "data" / "events"


def load_context(name):
    with open(EVENTS_DIR / name, encoding="utf-8") as handle:
        return extract_context(json.load(handle))


def valid_payload():
    return build_payload(load_context("sentry-python-2.68.0_generated_chained_cause.json"), 16384, "hook")


def test_payload_round_trip():
    context = load_context("sentry-python-2.68.0_generated_chained_cause.json")

    payload = build_payload(context, 16384, "hook")
    event_id, checked = check_payload(payload)

    assert payload["v"] == PAYLOAD_VERSION
    assert payload["source"] == "hook"
    assert event_id == "cf8601eaa70a4b139c063af9996636b4"
    assert checked == payload["context"]
    assert [exception["type"] for exception in checked["exceptions"]] == ["ValueError", "PaymentGatewayError"]


def test_payload_survives_json():
    payload = valid_payload()

    decoded = json.loads(json.dumps(payload))

    assert check_payload(decoded) == check_payload(payload)


def test_payload_scrubbed():
    context = extract_context(
        {
            "event_id": "d" * 32,
            "exception": {"values": [{"type": "ValueError", "value": "bad address alice@example.com from 10.0.0.7"}]},
        }
    )

    payload = build_payload(context, 16384, "ingest")

    assert payload["context"]["exceptions"][0]["value"] == "bad address [email] from [ip]"
    assert context["exceptions"][0]["value"] == "bad address alice@example.com from 10.0.0.7"


def test_payload_event_id_normalised():
    context = extract_context({"event_id": "550E8400-E29B-41D4-A716-446655440000", "exception": {"values": []}})

    payload = build_payload(context, 16384, "hook")

    assert payload["event_id"] == "550e8400e29b41d4a716446655440000"
    assert check_payload(payload)[0] == "550e8400e29b41d4a716446655440000"


@pytest.mark.parametrize(
    "event_id",
    [
        None,
        "",
        "not-an-id",
        "z" * 32,
        123,
        pytest.param(
            "--------",
        ),
    ],
)
def test_payload_event_id_derived(event_id):
    context = {"event_id": event_id, "exceptions": []}

    payload = build_payload(context, 16384, "hook")
    checked_id, _ = check_payload(payload)

    assert re.fullmatch(r"[0-9a-f]{32}", checked_id)


def test_payload_derived_id_stable():
    context = extract_context({"message": "disk full", "logger": "app.jobs"})

    first = build_payload(context, 16384, "hook")
    second = build_payload(context, 16384, "hook")

    assert first["event_id"] == second["event_id"]
    assert first["event_id"] == content_event_id(context)


def test_payload_bounded():
    long_value = "word " * 400
    context = extract_context(
        {"event_id": "e" * 32, "exception": {"values": [{"type": f"Error{index}", "value": long_value} for index in range(5)]}}
    )

    payload = build_payload(context, 4096, "hook")

    assert len(json.dumps(payload["context"])) <= 4096
    assert payload["context"]["truncated"] is True
    assert check_payload(payload)[0] == "e" * 32


@pytest.mark.parametrize(
    "payload, problem",
    [
        (None, "NoneType"),
        ([1, 2], "list"),
        ("payload", "str"),
        ({"event_id": "a" * 32, "context": {"exceptions": []}}, "version None"),
        ({"v": 2, "event_id": "a" * 32, "context": {"exceptions": []}}, "version 2"),
        ({"v": PAYLOAD_VERSION, "context": {"exceptions": []}}, "event_id None"),
        ({"v": PAYLOAD_VERSION, "event_id": "xyz", "context": {"exceptions": []}}, "event_id 'xyz'"),
        ({"v": PAYLOAD_VERSION, "event_id": "a" * 65, "context": {"exceptions": []}}, "8 to 64 hex digits"),
        ({"v": PAYLOAD_VERSION, "event_id": 12345678, "context": {"exceptions": []}}, "event_id 12345678"),
        ({"v": PAYLOAD_VERSION, "event_id": "a" * 32}, "context"),
        ({"v": PAYLOAD_VERSION, "event_id": "a" * 32, "context": "text"}, "context"),
        ({"v": PAYLOAD_VERSION, "event_id": "a" * 32, "context": {}}, "'exceptions'"),
        ({"v": PAYLOAD_VERSION, "event_id": "a" * 32, "context": {"exceptions": "none"}}, "'exceptions'"),
    ],
)
def test_check_payload_invalid(payload, problem):
    with pytest.raises(InvalidEventError) as raised:
        check_payload(payload)

    assert problem in str(raised.value)
