import json
from pathlib import Path

import pytest

from classifier.context import (
    MAX_EXCEPTIONS,
    bound_context,
    content_event_id,
    extract_context,
    primary_exception,
)

EVENTS_DIR = Path(__file__).resolve().parent.parent / "data" / "events"
EVENT_FILES = sorted(EVENTS_DIR.glob("*.json"))
HUGE_EVENT = "sentry-python-2.68.0_generated_huge_nested.json"

BOUND_NOT_GUARANTEED = (
    "bound_context never cuts frame fields, the message below max(64, max_bytes // 8) or the other fields, "
    "and it adds 'tags' and 'truncated', so the JSON can stay over max_bytes"
)


def load_event(name):
    with open(EVENTS_DIR / name, encoding="utf-8") as handle:
        return json.load(handle)


def encoded_size(context):
    return len(json.dumps(context, default=str).encode("utf-8"))


def test_event_files_present():
    assert len(EVENT_FILES) == 10


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda path: path.stem)
def test_extract_event_file(path):
    with open(path, encoding="utf-8") as handle:
        event = json.load(handle)

    context = extract_context(event)

    assert isinstance(context["exceptions"], list)
    json.dumps(context)
    raw = event.get("exception")
    raw_values = raw.get("values") if isinstance(raw, dict) else raw
    expected_types = [value.get("type") for value in (raw_values or [])][-MAX_EXCEPTIONS:]
    assert [exception["type"] for exception in context["exceptions"]] == expected_types


def test_extract_chained_cause_order():
    context = extract_context(load_event("sentry-python-2.68.0_generated_chained_cause.json"))

    types = [exception["type"] for exception in context["exceptions"]]
    assert types == ["ValueError", "PaymentGatewayError"]
    assert primary_exception(context)["type"] == "PaymentGatewayError"
    assert primary_exception(context)["value"] == "could not charge order ord_123"


def test_extract_chained_null_frames():
    context = extract_context(load_event("sentry_tests-sentry-grouping-grouping_inputs_chained-exception-in-app.json"))

    types = [exception["type"] for exception in context["exceptions"]]
    assert types == ["RemoteException", "OnErrorNotImplementedException"]
    assert context["exceptions"][0]["frames"] == []
    assert context["exceptions"][0]["module"] == "android.os"
    assert len(context["exceptions"][1]["frames"]) >= 1


def test_extract_tags_list_of_pairs():
    context = extract_context(load_event("sentry_src-sentry-data-samples_python-modern.json"))

    assert isinstance(context["tags"], dict)
    assert context["tags"]["runtime"] == "CPython 3.13.5"
    assert context["tags"]["server_name"] == "web01.example.org"
    assert context["tags"]["handled"] == "no"


def test_extract_tags_skips_bad_pairs():
    context = extract_context({"tags": [["a", "1"], ["lonely"], "text", ["b", 2, 3], ("c", None)]})

    assert context["tags"] == {"a": "1", "c": None}


def test_extract_legacy_level_number():
    event = load_event("relay_general-tests-fixtures-payloads_legacy_python.json")
    assert event["level"] == 40

    context = extract_context(event)

    assert context["level"] == "error"
    assert context["exceptions"][0]["type"] == "ZeroDivisionError"


@pytest.mark.parametrize("number, name", [(50, "fatal"), (30, "warning"), (20, "info"), (10, "debug")])
def test_extract_level_numbers(number, name):
    assert extract_context({"level": number})["level"] == name


def test_extract_frames_null():
    event = {"exception": {"values": [{"type": "E", "value": "v", "stacktrace": {"frames": None}}]}}

    context = extract_context(event)

    assert context["exceptions"][0]["frames"] == []


def test_extract_frames_prefers_in_app():
    frames = [
        {"module": "lib.a", "function": "call", "in_app": False},
        {"module": "app.views", "function": "index", "lineno": 12, "in_app": True},
        {"module": "lib.b", "function": "inner", "in_app": False},
    ]
    event = {"exception": {"values": [{"type": "E", "stacktrace": {"frames": frames}}]}}

    extracted = extract_context(event)["exceptions"][0]["frames"]

    assert extracted == [{"module": "app.views", "function": "index", "lineno": 12, "in_app": True}]


def test_extract_request_path_flask():
    context = extract_context(load_event("sentry-python-2.68.0_generated_flask_request.json"))

    assert context["request"] == {"method": "POST", "path": "/orders/ord_123/pay"}


def test_extract_request_drops_query():
    event = {"request": {"method": "GET", "url": "http://127.0.0.1:8000/search/items?q=secret&page=2#top"}}

    context = extract_context(event)

    assert context["request"]["path"] == "/search/items"
    assert "secret" not in json.dumps(context)


@pytest.mark.parametrize("junk", [None, [], [{"exception": {}}], "an event", 42, 3.5, b"bytes", object()])
def test_extract_non_dict(junk):
    context = extract_context(junk)

    assert context["exceptions"] == []
    assert "invalid" in context


class BrokenStr:
    def __str__(self):
        raise RuntimeError("str() of this object fails")


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"exception": "boom", "tags": "a=b", "request": [], "level": True, "fingerprint": "x"},
        {"exception": {"values": "not a list"}, "logentry": 5, "message": {"formatted": None}},
        {"exception": {"values": [None, 1, "x", {"type": 5, "value": ["a"], "mechanism": "m"}]}},
        {"exception": [{"stacktrace": "frames", "mechanism": {"handled": "no"}}]},
        {"exception": {"values": [{"stacktrace": {"frames": [None, 3, {"lineno": "12", "in_app": "yes"}]}}]}},
        {"exception": {"values": [{"stacktrace": {"frames": {"0": {}}}}]}},
        {"request": {"url": "http://[::1", "method": 7}, "tags": {1: 2, None: "x", "k": {"nested": True}}},
        {"request": {"url": 12}, "tags": [[1, 2], [None, None]], "fingerprint": [None, 1, {"a": 1}]},
        {"level": -1, "platform": BrokenStr(), "event_id": b"\xff\xfe", "timestamp": 1.5e9},
        {"message": "x" * 100_000, "exception": {"values": [{"value": "y" * 100_000}] * 50}},
    ],
)
def test_extract_junk_dict(event):
    context = extract_context(event)

    assert isinstance(context["exceptions"], list)
    json.dumps(context)


def test_extract_limits_sizes():
    event = {"message": "m" * 10_000, "exception": {"values": [{"type": "E", "value": "v" * 10_000}] * 20}}

    context = extract_context(event)

    assert len(context["exceptions"]) == MAX_EXCEPTIONS
    assert len(context["message"]) <= 2048
    assert all(len(exception["value"]) <= 2048 for exception in context["exceptions"])


@pytest.mark.parametrize(
    "max_bytes",
    [
        16384,
        4096,
        1024,
        pytest.param(512),
    ],
)
def test_bound_huge_event(max_bytes):
    context = extract_context(load_event(HUGE_EVENT))

    bounded = bound_context(context, max_bytes)

    assert encoded_size(bounded) <= max_bytes
    assert primary_exception(bounded)["type"] == "KeyError"


def large_event():
    frames = [
        {"module": "m" * 300, "function": "f" * 300, "filename": "p" * 300, "lineno": number}
        for number in range(8)
    ]
    values = [
        {"type": f"Error{index}", "value": "v" * 3000, "stacktrace": {"frames": frames}}
        for index in range(5)
    ]
    return {
        "event_id": "a" * 32,
        "message": "m" * 3000,
        "tags": {f"tag{index}": "t" * 300 for index in range(40)},
        "exception": {"values": values},
    }


@pytest.mark.parametrize(
    "max_bytes",
    [
        16384,
        8192,
        4096,
        pytest.param(2048),
    ],
)
def test_bound_large_context(max_bytes):
    context = extract_context(large_event())
    assert encoded_size(context) > max_bytes

    bounded = bound_context(context, max_bytes)

    assert encoded_size(bounded) <= max_bytes
    assert bounded["truncated"] is True
    assert primary_exception(bounded)["type"] == "Error4"


def test_bound_leaves_input_alone():
    context = extract_context(large_event())
    before = json.dumps(context, sort_keys=True)

    bound_context(context, 4096)

    assert json.dumps(context, sort_keys=True) == before


def test_bound_small_context_unchanged():
    context = extract_context(load_event("sentry-python-2.68.0_generated_flask_request.json"))

    assert bound_context(context, 16384) == context


def test_content_event_id_stable():
    event = load_event("sentry_src-sentry-data-samples_python-modern.json")
    reordered = dict(reversed(list(event.items())))

    derived_id = content_event_id(event)

    assert derived_id == content_event_id(load_event("sentry_src-sentry-data-samples_python-modern.json"))
    assert derived_id == content_event_id(reordered)
    assert len(derived_id) == 32
    assert set(derived_id) <= set("0123456789abcdef")


def test_content_event_id_differs():
    assert content_event_id({"message": "a"}) != content_event_id({"message": "b"})


@pytest.mark.parametrize("junk", [None, "text", [1, 2], {1: "a", "b": 2}, {"s": {1, 2}}])
def test_content_event_id_junk(junk):
    derived_id = content_event_id(junk)

    assert len(derived_id) == 32
    assert derived_id == content_event_id(junk)
