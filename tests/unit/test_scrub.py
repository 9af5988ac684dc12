import pytest

from classifier.scrub import scrub_text, scrub_value, stable_hash


SCRUB_CASES = [
    # E-mail addresses.
    ("contact alice.smith@example.com now", "contact [email] now"),
    ("mailto:bob+billing@corp.example.org", "mailto:[email]"),
    # IP addresses.
    ("from 10.0.0.15 port 5432", "from [ip] port 5432"),
    ("client 192.168.1.254:8080 closed", "client [ip]:8080 closed"),
    ("addr 2001:0db8:85a3:0000:0000:8a2e:0370:7334 down", "addr [ip] down"),
    ("connect to ::1 refused", "connect to [ip] refused"),
    pytest.param("addr 2001:db8:85a3::8a2e:370:7334 down", "addr [ip] down"),
    pytest.param("peer fe80::1ff:fe23:4567:890a closed", "peer [ip] closed"),
    # Tokens and keys.
    ("Authorization: Bearer abcdef1234567890XYZ", "Authorization: Bearer [token]"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic [token]"),
    (
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U bad",
        "token [jwt] bad",
    ),
    ("key sk-proj-abcdefghijklmnopqrstuvwx rejected", "key [api-key] rejected"),
    (
        "Incorrect API key provided: sk-abc123def456ghi789jkl012mno. You can find",
        "Incorrect API key provided: [api-key]. You can find",
    ),
    ("aws AKIAIOSFODNN7EXAMPLE denied", "aws [api-key] denied"),
    ("pushed with ghp_abcdefghijklmnopqrstuvwxyz0123456789", "pushed with [api-key]"),
    # Passwords in URLs and key=value pairs.
    ("postgresql://app:s3cr3t@db.internal:5432/app", "postgresql://app:[password]@db.internal:5432/app"),
    ("amqp://guest:guest@rabbit:5672//", "amqp://guest:[password]@rabbit:5672//"),
    pytest.param("redis://:hunter2@cache:6379/0", "redis://:[password]@cache:6379/0"),
    ("login failed password=hunter2 for x", "login failed password=[secret] for x"),
    ("PASSWORD = hunter2", "PASSWORD = [secret]"),
    ("GET /cb?api_key=abcd1234&page=2", "GET /cb?api_key=[secret]&page=2"),
    pytest.param("{'password': 'hunter2'}", "{'password': '[secret]'}"),
    pytest.param('{"password": "hunter2"}', '{"password": "[secret]"}'),
    # Card numbers: masked only when the Luhn check passes.
    ("card 4111 1111 1111 1111 declined", "card [card] declined"),
    ("card 4111111111111111 declined", "card [card] declined"),
    ("card 5500-0055-5555-5559 declined", "card [card] declined"),
    ("amex 378282246310005 ok", "amex [card] ok"),
    ("order 4111111111111112 not found", "order 4111111111111112 not found"),
    ("batch 1234567812345678 done", "batch 1234567812345678 done"),
    pytest.param("card 4111111111111111 123 rejected", "card [card] 123 rejected"),
    pytest.param("qty 3 4242 4242 4242 4242", "qty 3 [card]"),
    # Phone numbers in international format.
    ("call +1 415 555 2671 back", "call [phone] back"),
    ("call +44 20 7946 0958 back", "call [phone] back"),
    ("call +49-30-1234567 back", "call [phone] back"),
    # User ids become a stable hash.
    ("user_id=12345 not found", "user_id=user-5994471abb01 not found"),
    ("user_id: abc-42 missing", "user_id: user-a32847fe9d93 missing"),
    ("customer_id=cus_9s6XKzkNRiz8i3 failed", "customer_id=user-a26a1f30b4c3 failed"),
    ("user_id 12345 and user_id 12345", "user_id user-5994471abb01 and user_id user-5994471abb01"),
    # Near misses that must stay as they are.
    ("requests 2.31.0 installed", "requests 2.31.0 installed"),
    ("Python 3.11.4", "Python 3.11.4"),
    ('File "app.py", line 1804, in handler', 'File "app.py", line 1804, in handler'),
    ("Expecting value: line 1804 column 0 (char 52113)", "Expecting value: line 1804 column 0 (char 52113)"),
    (
        "/srv/.cache/3f786850e387550fdab836ed7e6dc881de23001b/app.py",
        "/srv/.cache/3f786850e387550fdab836ed7e6dc881de23001b/app.py",
    ),
    ("listening on port 5432", "listening on port 5432"),
    ("localhost:8000 refused", "localhost:8000 refused"),
    ("ports 8080-8090 busy", "ports 8080-8090 busy"),
    ("uuid 550e8400-e29b-41d4-a716-446655440000 missing", "uuid 550e8400-e29b-41d4-a716-446655440000 missing"),
    ("object at 0x7f7ba0cdb550", "object at 0x7f7ba0cdb550"),
    ("[Errno 111] Connection refused", "[Errno 111] Connection refused"),
    ("password authentication failed for user app", "password authentication failed for user app"),
    ("ip 999.1.1.1 is invalid", "ip 999.1.1.1 is invalid"),
    ("started 12:30 today", "started 12:30 today"),
    pytest.param(
        "failed at 2024-01-15 12:30:45.123456",
        "failed at 2024-01-15 12:30:45.123456",
    ),
]


@pytest.mark.parametrize("text, expected", SCRUB_CASES)
def test_scrub_text(text, expected):
    assert scrub_text(text) == expected


def test_scrub_table_size():
    assert len(SCRUB_CASES) >= 30


@pytest.mark.parametrize("text", ["", None])
def test_scrub_empty(text):
    assert scrub_text(text) == text


def test_scrub_idempotent():
    text = "user_id=7 alice@example.com 10.0.0.1 password=x card 4111111111111111"

    once = scrub_text(text)

    assert scrub_text(once) == once


def test_stable_hash():
    assert stable_hash("12345") == "5994471abb01"
    assert stable_hash("12345") != stable_hash("12346")


def test_scrub_value_nested():
    value = {
        "message": "mail alice@example.com",
        "items": ["10.0.0.1", 42, None, {"deep": "Bearer abcdefgh12345678"}],
        "count": 3,
        "ok": True,
    }

    scrubbed = scrub_value(value)

    assert scrubbed == {
        "message": "mail [email]",
        "items": ["[ip]", 42, None, {"deep": "Bearer [token]"}],
        "count": 3,
        "ok": True,
    }
    assert value["message"] == "mail alice@example.com"
