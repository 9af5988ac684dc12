"""Extract the error context that classification needs from a Sentry event.

The input is whatever `before_send` or an ingested file holds: a modern SDK
event, a legacy raven payload, a Java or JavaScript event, or junk. Extraction
never raises; it copies only plain, bounded values, so the context can leave
the request thread while the SDK keeps using the event.
"""

import hashlib
import json
from typing import Any, Optional
from urllib.parse import urlsplit

MAX_STRING_CHARS = 1024
MAX_MESSAGE_CHARS = 2048
MAX_EXCEPTIONS = 5
MAX_FRAMES = 5
MAX_TAGS = 30
MAX_FINGERPRINT_PARTS = 10

_LEVELS_BY_NUMBER = {50: "fatal", 40: "error", 30: "warning", 20: "info", 10: "debug"}
_FRAME_KEYS = ("module", "function", "filename")


def _text(value: Any, limit: int = MAX_STRING_CHARS) -> Optional[str]:
    """Return `value` as a string cut to `limit` characters, or None for no value."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        try:
            value = str(value)
        except Exception:
            return None
    if "\x00" in value:
        # Postgres text and jsonb cannot store NUL characters.
        value = value.replace("\x00", "\ufffd")
    if len(value) > limit:
        return value[: limit - 3] + "..."
    return value


def _level(value: Any) -> Optional[str]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _LEVELS_BY_NUMBER.get(value, str(value))
    return _text(value, 16)


def _message(event: dict) -> Optional[str]:
    """Return the log message of an event without an exception."""
    for key in ("logentry", "message"):
        value = event.get(key)
        if isinstance(value, dict):
            value = value.get("formatted") or value.get("message")
        if isinstance(value, str) and value:
            return _text(value, MAX_MESSAGE_CHARS)
    return None


def _exception_values(event: dict) -> list:
    raw = event.get("exception")
    if isinstance(raw, dict):
        raw = raw.get("values")
    if not isinstance(raw, list):
        return []
    return [value for value in raw if isinstance(value, dict)]


def _frames(exception: dict) -> list:
    """Return the innermost frames, in-app ones when the event marks any."""
    stacktrace = exception.get("stacktrace")
    frames = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
    if not isinstance(frames, list):
        return []
    frames = [frame for frame in frames if isinstance(frame, dict)]
    in_app = [frame for frame in frames if frame.get("in_app") is True]
    chosen = (in_app or frames)[-MAX_FRAMES:]

    result = []
    for frame in chosen:
        entry = {key: _text(frame.get(key), 256) for key in _FRAME_KEYS if frame.get(key) is not None}
        lineno = frame.get("lineno")
        if isinstance(lineno, int) and not isinstance(lineno, bool):
            entry["lineno"] = lineno
        if "in_app" in frame:
            entry["in_app"] = frame.get("in_app") is True
        result.append(entry)
    return result


def _exception(exception: dict) -> dict:
    mechanism = exception.get("mechanism")
    mechanism = mechanism if isinstance(mechanism, dict) else {}
    handled = mechanism.get("handled")
    return {
        "type": _text(exception.get("type"), 256),
        "value": _text(exception.get("value"), MAX_MESSAGE_CHARS),
        "module": _text(exception.get("module"), 256),
        "mechanism": _text(mechanism.get("type"), 64),
        "handled": handled if isinstance(handled, bool) else None,
        "frames": _frames(exception),
    }


def _request(event: dict) -> Optional[dict]:
    request = event.get("request")
    if not isinstance(request, dict):
        return None
    url = request.get("url")
    path = None
    if isinstance(url, str):
        try:
            path = urlsplit(url).path or None
        except ValueError:
            path = None
    method = _text(request.get("method"), 16)
    if path is None and method is None:
        return None
    return {"method": method, "path": _text(path, 512)}


def _tags(event: dict) -> dict:
    """Return tags as a dict; Sentry stores them as a list of pairs, SDKs send a dict."""
    raw = event.get("tags")
    if isinstance(raw, dict):
        pairs = raw.items()
    elif isinstance(raw, list):
        pairs = [pair for pair in raw if isinstance(pair, (list, tuple)) and len(pair) == 2]
    else:
        return {}
    tags = {}
    for key, value in pairs:
        if len(tags) >= MAX_TAGS:
            break
        key = _text(key, 64)
        if key:
            tags[key] = _text(value, 200)
    return tags


def _fingerprint(event: dict) -> Optional[list]:
    raw = event.get("fingerprint")
    if not isinstance(raw, list) or not raw:
        return None
    parts = [_text(part, 200) for part in raw[:MAX_FINGERPRINT_PARTS]]
    return [part for part in parts if part is not None] or None


def extract_context(event: Any) -> dict:
    """Return a bounded, JSON-ready dict of what classification needs from `event`.

    The chained exceptions keep Sentry's order: the cause first, the raised
    exception last. Anything that is not a dict yields an empty context.
    """
    if not isinstance(event, dict):
        return {"exceptions": [], "invalid": f"event is {type(event).__name__}, not a dict"}

    exceptions = [_exception(value) for value in _exception_values(event)[-MAX_EXCEPTIONS:]]
    context = {
        "event_id": _text(event.get("event_id"), 64),
        "platform": _text(event.get("platform"), 32),
        "level": _level(event.get("level")),
        "logger": _text(event.get("logger"), 128),
        "message": _message(event),
        "exceptions": exceptions,
        "request": _request(event),
        "transaction": _text(event.get("transaction"), 256),
        "release": _text(event.get("release"), 128),
        "environment": _text(event.get("environment"), 64),
        "tags": _tags(event),
        "fingerprint": _fingerprint(event),
        "timestamp": _text(event.get("timestamp"), 40),
    }
    return {key: value for key, value in context.items() if value not in (None, {}, [])} | {
        "exceptions": exceptions
    }


def _size(context: dict) -> int:
    return len(json.dumps(context, default=str))


def _cut_strings(exceptions: list, keep: int) -> list:
    cut = []
    for exception in exceptions:
        frames = [
            {key: (_text(value, keep) if isinstance(value, str) else value) for key, value in frame.items()}
            for frame in exception.get("frames", [])
        ]
        cut.append({key: (_text(value, keep) if isinstance(value, str) else value) for key, value in exception.items()}
                   | {"frames": frames})
    return cut


def bound_context(context: dict, max_bytes: int) -> dict:
    """Cut a context until its JSON encoding fits `max_bytes`; never refuse it.

    Steps, each only while still too large: keep two frames per exception, drop
    tags, keep only the raised exception, cut every string, drop its frames.
    A bound under about 200 bytes may still be exceeded by the last fields left
    (event id, exception type and a short message).
    """
    if _size(context) <= max_bytes:
        return context
    context = dict(context, truncated=True)
    context["exceptions"] = [dict(exc, frames=exc.get("frames", [])[-2:]) for exc in context.get("exceptions", [])]
    for key in ("tags", "fingerprint", "transaction", "timestamp"):
        if _size(context) > max_bytes:
            context.pop(key, None)
    if _size(context) > max_bytes and len(context["exceptions"]) > 1:
        context["exceptions"] = context["exceptions"][-1:]
    keep = 1024
    while _size(context) > max_bytes and keep > 16:
        keep //= 2
        context["exceptions"] = _cut_strings(context["exceptions"], keep)
        for key in ("message", "logger", "release", "environment"):
            if isinstance(context.get(key), str):
                context[key] = _text(context[key], keep)
        if isinstance(context.get("request"), dict):
            context["request"] = {key: _text(value, keep) for key, value in context["request"].items()}
    if _size(context) > max_bytes:
        context["exceptions"] = [dict(exc, frames=[]) for exc in context["exceptions"]]
    return context


def content_event_id(event: Any) -> str:
    """Derive a stable 32-hex event id from an event that has none, so re-ingesting is idempotent."""
    try:
        encoded = json.dumps(event, sort_keys=True, default=repr).encode("utf-8", "replace")
    except (TypeError, ValueError, RecursionError):
        encoded = repr(event).encode("utf-8", "replace")
    return hashlib.sha256(encoded).hexdigest()[:32]


def primary_exception(context: dict) -> Optional[dict]:
    """Return the exception that was raised last, the one the event is about."""
    exceptions = context.get("exceptions") or []
    return exceptions[-1] if exceptions else None
