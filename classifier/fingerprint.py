"""Group events of the same cause under one fingerprint.

The signature is the exception type, the message with its volatile parts
replaced by placeholders, and the innermost in-app frames by module and
function (line numbers change with every deploy). A fingerprint the app set
in Sentry takes precedence, unless it only names Sentry's default grouping.
"""

import hashlib
import re

from classifier.context import primary_exception

_NORMALISERS = [
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+\-]\d{2}:?\d{2})?"), "<time>"),
    (re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>]+"), "<url>"),
    (re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"), "<email>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<host>"),
    (re.compile(r"\b(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,}:\d+\b"), "<host>"),
    (re.compile(r"\blocalhost:\d+\b"), "<host>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b[0-9a-fA-F]*\d[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*\b|\b[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*\d[0-9a-fA-F]*\b"), "<hex>"),
    # Digits inside words change too: "after 30s", "ord_123", "worker-7".
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]

_DEFAULT_MARKERS = {"{{ default }}", "{{default}}"}


def normalise_message(message: str) -> str:
    """Replace numbers, ids, hosts, quoted values and timestamps with placeholders."""
    text = message or ""
    for pattern, placeholder in _NORMALISERS:
        text = pattern.sub(placeholder, text)
    return re.sub(r"\s+", " ", text).strip()[:300]


def signature(context: dict) -> str:
    """Return the human-readable grouping signature of an extracted context."""
    custom = context.get("fingerprint")
    if custom and not all(part in _DEFAULT_MARKERS for part in custom):
        return "sentry:" + "|".join(custom)

    exception = primary_exception(context)
    if exception is None:
        logger = context.get("logger") or ""
        return f"message:{logger}:{normalise_message(context.get('message') or '')}"

    frames = [
        f"{frame.get('module') or frame.get('filename') or '?'}.{frame.get('function') or '?'}"
        for frame in exception.get("frames", [])[-3:]
    ]
    kind = exception.get("type") or "?"
    if exception.get("module"):
        kind = f"{exception['module']}.{kind}"
    return f"{kind}:{normalise_message(exception.get('value') or '')}:{'>'.join(frames)}"


def fingerprint(context: dict) -> str:
    """Return a 32-hex digest of the signature, the key that events of one cause share."""
    return hashlib.sha256(signature(context).encode("utf-8", "replace")).hexdigest()[:32]
