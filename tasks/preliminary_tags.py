"""Preliminary `triage.category` and `triage.severity` tags, added by the hook before an event is sent.

Sentry events cannot be changed after ingestion, so the only way to have the
triage tags on the event itself is to add them in `before_send`, from the
rules tier (no network, no provider). Off unless SENTRY_PRELIMINARY_TAGS=true.
The LLM's later classification may differ; it reaches the issue as a comment.

The function never raises and stays cheap: one bounded context extraction and
a few regular expressions over short strings.
"""

import logging
import threading
import time
from typing import Optional

from classifier import rules
from classifier.context import extract_context
from config import ConfigError, load_settings

logger = logging.getLogger(__name__)

CATEGORY_TAG = "triage.category"
SEVERITY_TAG = "triage.severity"

_enabled: Optional[bool] = None
_lock = threading.Lock()
_last_warning = 0.0


def enabled() -> bool:
    """SENTRY_PRELIMINARY_TAGS, read once per process."""
    global _enabled
    if _enabled is None:
        with _lock:
            if _enabled is None:
                try:
                    _enabled = load_settings().sentry_preliminary_tags
                except ConfigError as error:
                    logger.error("preliminary triage tags disabled: %s", error)
                    _enabled = False
    return _enabled


def configure(value: Optional[bool]) -> None:
    """Force the switch on or off; None reads the settings again on next use."""
    global _enabled
    _enabled = value


def _set_tags(event: dict, category: str, severity: str) -> None:
    tags = event.get("tags")
    if tags is None:
        event["tags"] = {CATEGORY_TAG: category, SEVERITY_TAG: severity}
    elif isinstance(tags, dict):
        tags[CATEGORY_TAG] = category
        tags[SEVERITY_TAG] = severity
    elif isinstance(tags, list):
        # The older protocol sends tags as [key, value] pairs.
        others = [pair for pair in tags if not (isinstance(pair, (list, tuple)) and pair and
                                              pair[0] in (CATEGORY_TAG, SEVERITY_TAG))]
        tags[:] = others + [[CATEGORY_TAG, category], [SEVERITY_TAG, severity]]


def add_preliminary_tags(event, context: Optional[dict] = None):
    """Add the rules tier's category and severity as tags to an error event; return the event. Never raises.

    `context` is the event's extracted context when the caller already has it.
    """
    global _last_warning
    try:
        if not enabled() or not isinstance(event, dict) or event.get("type") == "transaction":
            return event
        result = rules.classify(context if context is not None else extract_context(event))
        _set_tags(event, result.category.value, result.severity.value)
    except Exception:  # the host app must never see our failure
        now = time.monotonic()
        if now - _last_warning >= 60.0:
            _last_warning = now
            logger.warning("errortriage could not add preliminary triage tags; the event is sent without them")
    return event
