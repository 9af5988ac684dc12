"""Turn labelled error reports (JSON Lines) into Sentry events for evaluation.

A record has `exception_type` (fully qualified where known), `exception_message`,
`stack_excerpt` as "path:function:line" strings in traceback order, an optional
`request_path`, and the expected `label_category` and `label_severity`.
"""

import hashlib
import json
from pathlib import Path
from typing import Iterator


def _frame(entry: str) -> dict:
    path, _, rest = entry.partition(":")
    function, _, line = rest.rpartition(":")
    if not function:
        function, line = rest, ""
    module = path[:-3] if path.endswith(".py") else path
    frame = {
        "filename": path,
        "module": module.replace("/", "."),
        "function": function or "?",
        # Library frames come from site-packages in a real app; the rest is the app's own code.
        "in_app": not any(path.startswith(lib) for lib in _LIBRARY_PREFIXES),
    }
    if line.isdigit():
        frame["lineno"] = int(line)
    return frame


_LIBRARY_PREFIXES = (
    "openai/", "anthropic/", "google/", "botocore/", "boto3/", "httpx/", "httpcore/", "requests/",
    "urllib3/", "celery/", "kombu/", "redis/", "psycopg2/", "sqlalchemy/", "asyncpg/", "django/",
    "flask/", "fastapi/", "starlette/", "pydantic/", "pydantic_core/", "langchain", "litellm/", "billiard/",
)


def record_to_event(record: dict) -> dict:
    """Build the Sentry event an SDK would send for one labelled report."""
    full_type = record.get("exception_type") or "Exception"
    module, _, name = full_type.rpartition(".")
    exception = {
        "type": name,
        "value": record.get("exception_message") or "",
        "mechanism": {"type": "generic", "handled": False},
        "stacktrace": {"frames": [_frame(entry) for entry in record.get("stack_excerpt") or []]},
    }
    if module:
        exception["module"] = module
    event = {
        "event_id": hashlib.sha256(str(record.get("id")).encode()).hexdigest()[:32],
        "platform": "python",
        "level": "error",
        "exception": {"values": [exception]},
    }
    if record.get("request_path"):
        event["request"] = {"method": "POST", "url": f"http://service.invalid{record['request_path']}"}
    return event


def read_records(path: Path) -> Iterator[dict]:
    """Yield the records of a JSON Lines file, naming the line of any that does not parse."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg}); fix or remove the line") from None
