from pathlib import Path

from classifier.context import extract_context
from classifier.dataset import read_records, record_to_event
from classifier.rules import classify
from classifier.schema import RULES, Category, Severity

DATASET = Path(__file__).resolve().parent.parent / "data" / "errors.jsonl"
MIN_CATEGORY_ACCURACY = 0.85
MIN_SEVERITY_WITHIN_ONE = 0.80


def classified_records():
    results = []
    for record in read_records(DATASET):
        context = extract_context(record_to_event(record))
        results.append((record, classify(context)))
    return results


def describe_miss(record, result):
    return (
        f"{record['id']} {record['exception_type']}: {record['exception_message'][:80]!r} "
        f"expected {record['label_category']}/{record['label_severity']}, "
        f"got {result.category.value}/{result.severity.value}"
    )


def test_dataset_size():
    assert len(classified_records()) >= 30


def test_rules_category_accuracy():
    results = classified_records()
    misses = [describe_miss(record, result) for record, result in results if result.category.value != record["label_category"]]

    accuracy = 1 - len(misses) / len(results)

    assert accuracy >= MIN_CATEGORY_ACCURACY, f"category accuracy {accuracy:.2f}; misses:\n" + "\n".join(misses)


def test_rules_severity_within_one():
    results = classified_records()
    misses = [
        describe_miss(record, result)
        for record, result in results
        if abs(result.severity.rank - Severity(record["label_severity"]).rank) > 1
    ]

    share = 1 - len(misses) / len(results)

    assert share >= MIN_SEVERITY_WITHIN_ONE, f"severity within one level {share:.2f}; misses:\n" + "\n".join(misses)


def make_context(type_name, value, module=None, frames=(), handled=False, level="error"):
    stack = [
        {"module": name, "function": function, "filename": name.replace(".", "/") + ".py", "in_app": name.startswith("app.")}
        for name, function in frames
    ]
    exception = {
        "type": type_name,
        "value": value,
        "mechanism": {"type": "generic", "handled": handled},
        "stacktrace": {"frames": stack},
    }
    if module:
        exception["module"] = module
    return extract_context({"level": level, "platform": "python", "exception": {"values": [exception]}})


def test_rules_database_down():
    context = make_context(
        "OperationalError",
        'could not connect to server: Connection refused\n\tIs the server running on host "db" and accepting\n'
        "\tTCP/IP connections on port 5432?",
        module="psycopg2",
        frames=[("app.db", "get_connection"), ("psycopg2", "connect")],
    )

    result = classify(context)

    assert result.category is Category.INFRASTRUCTURE
    assert result.severity is Severity.P0_CRITICAL
    assert result.classifier == RULES


def test_rules_http_connection_error():
    context = make_context(
        "ConnectionError",
        "HTTPSConnectionPool(host='api.example.com', port=443): Max retries exceeded with url: /v1/items "
        "(Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object at 0x7f>: "
        "Failed to establish a new connection: [Errno 111] Connection refused'))",
        module="requests.exceptions",
        frames=[("app.client", "fetch_items"), ("requests.api", "get")],
    )

    assert classify(context).category is Category.EXTERNAL_API


def test_rules_key_error():
    context = make_context("KeyError", "'user'", frames=[("app.views", "profile")])

    assert classify(context).category is Category.LOGIC_ERROR


def test_rules_pydantic_validation():
    context = make_context(
        "ValidationError",
        "1 validation error for Order\nquantity\n  Input should be a valid integer [type=int_parsing, input_value='x']",
        module="pydantic_core._pydantic_core",
        frames=[("app.api", "create_order"), ("pydantic.main", "__init__")],
    )

    assert classify(context).category is Category.VALIDATION


def test_rules_http_429():
    context = make_context(
        "HTTPError",
        "429 Client Error: Too Many Requests for url: https://api.example.com/v1/items",
        module="requests.exceptions",
        frames=[("app.client", "fetch_items"), ("requests.models", "raise_for_status")],
    )

    assert classify(context).category is Category.RATE_LIMIT


def test_rules_http_503():
    context = make_context(
        "HTTPError",
        "503 Server Error: Service Unavailable for url: https://api.example.com/v1/items",
        module="requests.exceptions",
        frames=[("app.client", "fetch_items"), ("requests.models", "raise_for_status")],
    )

    assert classify(context).category is Category.EXTERNAL_API


def test_rules_rate_limit_type_server_error():
    context = make_context(
        "RateLimitError",
        "The server had an error while processing your request. Sorry about that!",
        module="openai.error",
        frames=[("app.llm", "ask"), ("openai.api_requestor", "_interpret_response")],
    )

    assert classify(context).category is Category.EXTERNAL_API


def test_rules_quota_is_critical():
    context = make_context(
        "RateLimitError",
        "Error code: 429 - {'error': {'code': 'insufficient_quota'}}",
        module="openai",
        frames=[("app.llm", "ask")],
    )

    result = classify(context)

    assert result.category is Category.RATE_LIMIT
    assert result.severity is Severity.P0_CRITICAL


def test_rules_handled_lowers_severity():
    unhandled = classify(make_context("KeyError", "'user'", frames=[("app.views", "profile")], handled=False))
    handled = classify(make_context("KeyError", "'user'", frames=[("app.views", "profile")], handled=True))

    assert handled.severity.rank > unhandled.severity.rank


def test_rules_empty_context():
    result = classify(extract_context(None))

    assert result.category is Category.UNKNOWN
    assert result.summary


def test_rules_summary_location():
    result = classify(make_context("KeyError", "'user'", frames=[("app.views", "profile")]))

    assert result.summary == "logic error: KeyError: 'user' in app.views.profile"
