import re

import pytest

from classifier.context import extract_context
from classifier.fingerprint import fingerprint, normalise_message, signature



def make_context(value, type_name="OperationalError", module="psycopg2", frames=None, line_offset=0, **event):
    if frames is None:
        frames = [("app.db", "connect"), ("app.views", "orders")]
    stack = [
        {"module": name, "function": function, "filename": name.replace(".", "/") + ".py", "lineno": 10 + index + line_offset, "in_app": True}
        for index, (name, function) in enumerate(frames)
    ]
    exception = {"type": type_name, "value": value, "module": module, "stacktrace": {"frames": stack}}
    return extract_context(dict(event, exception={"values": [exception]}))


@pytest.mark.parametrize(
    "first, second",
    [
        ("Order 1234 not found", "Order 98 not found"),
        ("User 550e8400-e29b-41d4-a716-446655440000 missing", "User 123e4567-e89b-12d3-a456-426614174000 missing"),
        ("could not connect to server at db-1.prod.internal:5432", "could not connect to server at db-7.prod.internal:6432"),
        ("connection to 10.0.0.5:6379 refused", "connection to 192.168.3.41:6380 refused"),
        ("duplicate key value violates unique constraint 'users_email'", "duplicate key value violates unique constraint 'orders_pk'"),
        ('KeyError "alice"', 'KeyError "bob"'),
        ("object at 0x7f3a2b1c", "object at 0x55d1e0aa"),
        ("deadline 2024-01-15T12:30:45Z passed", "deadline 2025-06-30 08:00:01.123+02:00 passed"),
        ("GET https://api.example.com/v1/items?id=5 failed", "GET https://api.example.com/v1/users/9 failed"),
        ("mail to alice@example.com bounced", "mail to bob@example.org bounced"),
        ("commit 3f786850e387 not found", "commit a94a8fe5ccb1 not found"),
        pytest.param(
            "statement timed out after 30s",
            "statement timed out after 60s",
        ),
        pytest.param(
            "could not charge order ord_123",
            "could not charge order ord_456",
        ),
    ],
)
def test_fingerprint_volatile_parts(first, second):
    assert fingerprint(make_context(first)) == fingerprint(make_context(second))


def test_fingerprint_line_numbers():
    before = make_context("boom", line_offset=0)
    after = make_context("boom", line_offset=250)
    assert before["exceptions"][0]["frames"][0]["lineno"] != after["exceptions"][0]["frames"][0]["lineno"]

    assert fingerprint(before) == fingerprint(after)


def test_fingerprint_event_ids_ignored():
    first = make_context("boom", event_id="a" * 32, timestamp="2024-01-01T00:00:00Z")
    second = make_context("boom", event_id="b" * 32, timestamp="2024-02-02T00:00:00Z")

    assert fingerprint(first) == fingerprint(second)


def test_fingerprint_type_differs():
    database = make_context("boom", type_name="OperationalError")
    interface = make_context("boom", type_name="InterfaceError")

    assert fingerprint(database) != fingerprint(interface)


def test_fingerprint_module_differs():
    assert fingerprint(make_context("boom", module="psycopg2")) != fingerprint(make_context("boom", module="pymysql"))


def test_fingerprint_function_differs():
    orders = make_context("boom", frames=[("app.db", "connect"), ("app.views", "orders")])
    invoices = make_context("boom", frames=[("app.db", "connect"), ("app.views", "invoices")])

    assert fingerprint(orders) != fingerprint(invoices)


def test_fingerprint_message_differs():
    assert fingerprint(make_context("connection refused")) != fingerprint(make_context("disk full"))


def test_fingerprint_format():
    digest = fingerprint(make_context("boom"))

    assert re.fullmatch(r"[0-9a-f]{32}", digest)


def test_fingerprint_sentry_precedence():
    first = make_context("Order 1 not found", fingerprint=["payments", "charge-failed"])
    second = make_context("disk full", type_name="OSError", fingerprint=["payments", "charge-failed"])
    other = make_context("Order 1 not found", fingerprint=["payments", "refund-failed"])

    assert signature(first) == "sentry:payments|charge-failed"
    assert fingerprint(first) == fingerprint(second)
    assert fingerprint(first) != fingerprint(other)


@pytest.mark.parametrize("marker", ["{{ default }}", "{{default}}"])
def test_fingerprint_default_marker(marker):
    with_marker = make_context("Order 1 not found", fingerprint=[marker])
    without = make_context("Order 2 not found")
    different = make_context("disk full", fingerprint=[marker])

    assert fingerprint(with_marker) == fingerprint(without)
    assert fingerprint(with_marker) != fingerprint(different)


def test_fingerprint_message_event():
    first = extract_context({"logger": "app.jobs", "message": "job 41 failed after 3 attempts"})
    second = extract_context({"logger": "app.jobs", "message": "job 977 failed after 5 attempts"})
    other_logger = extract_context({"logger": "app.mail", "message": "job 41 failed after 3 attempts"})

    assert fingerprint(first) == fingerprint(second)
    assert fingerprint(first) != fingerprint(other_logger)


def test_normalise_message_placeholders():
    normalised = normalise_message("user 42 at 10.1.2.3:80 sent 'x' at 2024-01-15T12:30:45Z")

    assert normalised == "user <n> at <host> sent <str> at <time>"


def test_normalise_message_empty():
    assert normalise_message("") == ""
    assert normalise_message(None) == ""
