"""The message the hook publishes and the bulk task consumes, built and checked in one place."""

import re

from classifier.context import bound_context, content_event_id
from classifier.errors import InvalidEventError
from classifier.scrub import scrub_value

PAYLOAD_VERSION = 1

_EVENT_ID = re.compile(r"(?=(?:-*[0-9a-fA-F]){8})[0-9a-fA-F\-]{8,64}")


def build_payload(context: dict, max_bytes: int, source: str, scrub: bool = True) -> dict:
    """Scrub (unless `scrub` is false: SCRUB_STORE=false) and bound a context, and wrap it for the bulk task."""
    event_id = context.get("event_id")
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        event_id = content_event_id(context)
    context = dict(context, event_id=event_id)
    if scrub:
        context = scrub_value(context)
    context = bound_context(context, max_bytes)
    return {"v": PAYLOAD_VERSION, "event_id": event_id.replace("-", "").lower(), "context": context, "source": source}


def check_payload(payload) -> tuple:
    """Return (event_id, context) or raise InvalidEventError naming what is wrong."""
    if not isinstance(payload, dict):
        raise InvalidEventError(f"payload is {type(payload).__name__}, expected a dict built by build_payload()")
    if payload.get("v") != PAYLOAD_VERSION:
        raise InvalidEventError(f"payload version {payload.get('v')!r} is not {PAYLOAD_VERSION}")
    event_id = payload.get("event_id")
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise InvalidEventError(f"event_id {event_id!r} is not 8 to 64 hex digits")
    context = payload.get("context")
    if not isinstance(context, dict) or not isinstance(context.get("exceptions"), list):
        raise InvalidEventError("context is missing or has no 'exceptions' list")
    return event_id, context
