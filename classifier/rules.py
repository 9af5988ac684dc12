"""The rule-based classifier: the tier that needs no provider and never fails.

Rules look at exception families (by class name and library), HTTP status
codes and provider error codes in the message, and messages that common
libraries raise. Severity starts from what the category usually means for a
web service, then moves with the blast radius the event shows.
"""

import re
from typing import Optional

from classifier.context import primary_exception
from classifier.schema import RULES, Category, Classification, Severity

# Libraries whose connection failures are the service's own infrastructure
# (database, cache, broker) rather than a third-party API.
_INFRA_LIBRARIES = (
    "psycopg", "sqlalchemy", "asyncpg", "django.db", "pymysql", "mysql", "sqlite3",
    "redis", "kombu", "celery", "billiard", "amqp", "pika", "pymongo", "elasticsearch",
)
_HTTP_LIBRARIES = (
    "requests", "urllib3", "httpx", "httpcore", "aiohttp", "http.client", "openai",
    "anthropic", "google", "botocore", "boto3", "litellm", "langchain", "cohere", "mistral",
)

_RATE_LIMIT_TYPES = re.compile(r"RateLimit|Throttl|TooManyRequests|ResourceExhausted|QuotaExceeded", re.I)
_RATE_LIMIT_TEXT = re.compile(
    r"\b429\b|rate[ _-]?limit|too many requests|RESOURCE_EXHAUSTED|insufficient_quota|exceeded your current quota"
    r"|throttl|quota exceeded|slow down",
    re.I,
)
_QUOTA_TEXT = re.compile(r"insufficient_quota|exceeded your current quota|billing|credit balance", re.I)

_AUTH_TYPES = re.compile(
    r"Authentication|Unauthori[sz]ed|PermissionDenied|Forbidden|InvalidToken|ExpiredToken|Credential"
    r"|NoCredentials|InvalidSignature|AccessDenied",
    re.I,
)
_AUTH_TEXT = re.compile(
    r"\b401\b|\b403\b|api[ _-]?key|authenticat|unauthori[sz]ed|forbidden|invalid[_ ]token|expired[_ ]?token"
    r"|security token|credentials|access denied|permission denied|password authentication failed",
    re.I,
)

_VALIDATION_TYPES = re.compile(
    r"ValidationError|JSONDecodeError|BadRequest|InvalidArgument|UnprocessableEntity|OutputParser"
    r"|DataError|IntegrityError|SuspiciousOperation|DecodeError|ParseError|UnicodeDecodeError",
    re.I,
)
_VALIDATION_TEXT = re.compile(
    r"\b400\b|\b422\b|invalid_request_error|context[_ ]length|maximum context length|too long"
    r"|invalid json|field required|not a valid|validation error|unterminated string|expecting value",
    re.I,
)

_INFRA_TYPES = re.compile(
    r"OperationalError|InterfaceError|TooManyConnections|WorkerLost|PoolTimeout|DiskFull|MemoryError"
    r"|BrokenPipe|ConnectionResetError|CannotConnectNow|TimeLimitExceeded|ClusterDown|BusyLoading",
    re.I,
)
_INFRA_TEXT = re.compile(
    r"could not connect to server|connection refused|too many (clients|connections)|no space left"
    r"|QueuePool limit|server closed the connection|database .* does not exist|out of memory"
    r"|worker exited prematurely|read-only file system|Errno 28|connection pool",
    re.I,
)

_EXTERNAL_TYPES = re.compile(
    r"APIConnectionError|APITimeoutError|InternalServerError|ServiceUnavailable|ServerError|BadGateway"
    r"|GatewayTimeout|RemoteProtocolError|RemoteDisconnected|ConnectError|ConnectTimeout|ReadTimeout"
    r"|ConnectionError|Timeout|HTTPError|APIError|Overloaded|ProtocolError|ChunkedEncodingError",
    re.I,
)
_EXTERNAL_TEXT = re.compile(
    r"\b5\d\d\b|server had an error|internal server error|bad gateway|service unavailable|overloaded"
    r"|UNAVAILABLE|server disconnected|max retries exceeded|timed out|connection aborted",
    re.I,
)
_SERVER_ERROR_TEXT = re.compile(r"\b50[0-4]\b|\b529\b|server had an error|internal server error|overloaded", re.I)

_LOGIC_TYPES = {
    "KeyError", "AttributeError", "TypeError", "IndexError", "NameError", "ZeroDivisionError",
    "AssertionError", "UnboundLocalError", "NotImplementedError", "RecursionError", "LookupError",
    "NoReverseMatch", "TemplateSyntaxError", "TemplateDoesNotExist", "ImproperlyConfigured",
    "FieldError", "MultipleObjectsReturned", "DoesNotExist", "StopIteration", "ImportError",
    "ModuleNotFoundError", "ValueError",
}

# Framework errors that always mean the code or its templates are wrong, whatever the message reads.
_FRAMEWORK_LOGIC_TYPES = {"NoReverseMatch", "TemplateSyntaxError", "TemplateDoesNotExist", "ImproperlyConfigured", "FieldError"}

_BASE_SEVERITY = {
    Category.RATE_LIMIT: Severity.P1_HIGH,
    Category.AUTHENTICATION: Severity.P1_HIGH,
    Category.VALIDATION: Severity.P3_LOW,
    Category.EXTERNAL_API: Severity.P2_MEDIUM,
    Category.INFRASTRUCTURE: Severity.P1_HIGH,
    Category.LOGIC_ERROR: Severity.P2_MEDIUM,
    Category.UNKNOWN: Severity.P2_MEDIUM,
}


def _names(context: dict) -> tuple[str, str]:
    """Return the exception class names and the modules/libraries seen, each joined by spaces."""
    types, modules = [], []
    for exception in context.get("exceptions") or []:
        full = exception.get("type") or ""
        module = exception.get("module") or ""
        types.append(full.rsplit(".", 1)[-1])
        modules.append(module or (full.rsplit(".", 1)[0] if "." in full else ""))
        modules.extend(frame.get("module") or "" for frame in exception.get("frames") or [])
    return " ".join(types), " ".join(modules).lower()


def _text_of(context: dict) -> str:
    parts = [context.get("message") or ""]
    for exception in context.get("exceptions") or []:
        parts.append(exception.get("type") or "")
        parts.append(exception.get("value") or "")
    return " ".join(parts)


def _messages_of(context: dict) -> str:
    parts = [context.get("message") or ""]
    parts.extend(exception.get("value") or "" for exception in context.get("exceptions") or [])
    return " ".join(parts)


def _from_library(modules: str, libraries: tuple) -> bool:
    return any(re.search(rf"(^|[\s.]){re.escape(lib)}", modules) for lib in libraries)


def categorise(context: dict) -> Category:
    """Return the category the rules assign to an extracted context."""
    types, modules = _names(context)
    text = _text_of(context)
    last_type = types.split(" ")[-1] if types else ""

    if last_type in _FRAMEWORK_LOGIC_TYPES:
        return Category.LOGIC_ERROR
    # Messages decide before class names: openai's old SDK raised RateLimitError for 5xx too.
    messages = _messages_of(context)
    if _RATE_LIMIT_TEXT.search(messages):
        return Category.RATE_LIMIT
    if _RATE_LIMIT_TYPES.search(types) and not _SERVER_ERROR_TEXT.search(messages):
        return Category.RATE_LIMIT
    if _AUTH_TYPES.search(types) or (_AUTH_TEXT.search(text) and not _VALIDATION_TEXT.search(text.replace("400", ""))):
        return Category.AUTHENTICATION
    if _INFRA_TEXT.search(text) and (_from_library(modules, _INFRA_LIBRARIES) or _INFRA_TYPES.search(types)):
        return Category.INFRASTRUCTURE
    if _INFRA_TYPES.search(types) and not _from_library(modules, _HTTP_LIBRARIES):
        return Category.INFRASTRUCTURE
    if _from_library(modules, _INFRA_LIBRARIES) and re.search(r"Connection|Timeout", types):
        return Category.INFRASTRUCTURE
    if _VALIDATION_TYPES.search(types) or _VALIDATION_TEXT.search(text):
        return Category.VALIDATION
    if last_type == "OSError" and _INFRA_TEXT.search(text):
        return Category.INFRASTRUCTURE
    if _EXTERNAL_TYPES.search(types) or (_EXTERNAL_TEXT.search(text) and _from_library(modules, _HTTP_LIBRARIES)):
        return Category.EXTERNAL_API
    if last_type in _LOGIC_TYPES:
        return Category.LOGIC_ERROR
    return Category.UNKNOWN


def _shared_dependency_down(category: Category, text: str) -> bool:
    """True when the failure hits every request, not one input: a down database or a dead key."""
    if category is Category.INFRASTRUCTURE:
        return bool(re.search(r"could not connect|connection refused|too many (clients|connections)|does not exist", text, re.I))
    if category is Category.AUTHENTICATION:
        return bool(re.search(r"\b401\b|incorrect api key|invalid x-api-key|authentication_error|credentials", text, re.I))
    if category is Category.RATE_LIMIT:
        return bool(_QUOTA_TEXT.search(text))
    return False


def grade(category: Category, context: dict) -> Severity:
    """Return the severity from the category and the blast radius the event shows."""
    text = _text_of(context)
    if _shared_dependency_down(category, text):
        return Severity.P0_CRITICAL

    rank = _BASE_SEVERITY[category].rank
    exception = primary_exception(context)
    handled = exception.get("handled") if exception else None
    level = context.get("level")

    if category is Category.EXTERNAL_API and _SERVER_ERROR_TEXT.search(text):
        rank -= 1
    if handled is False and category in (Category.LOGIC_ERROR, Category.UNKNOWN):
        rank -= 1
    if level == "fatal":
        rank -= 1
    if level in ("warning", "info", "debug") or handled is True:
        rank += 1
    return list(Severity)[max(0, min(3, rank))]


def summarise(category: Category, context: dict) -> str:
    """Return a one-line summary: what failed and where."""
    exception = primary_exception(context)
    if exception is None:
        what = (context.get("message") or "log message without an exception").splitlines()[0]
    else:
        value = (exception.get("value") or "").strip().splitlines()
        what = f"{exception.get('type') or 'Exception'}: {value[0] if value else '(no message)'}"
    where = _location(context)
    label = category.value.replace("_", " ").lower()
    summary = f"{label}: {what}" + (f" in {where}" if where else "")
    return summary if len(summary) <= 240 else summary[:237] + "..."


def _location(context: dict) -> Optional[str]:
    request = context.get("request") or {}
    if request.get("path"):
        return f"{request.get('method') or ''} {request['path']}".strip()
    exception = primary_exception(context)
    frames = exception.get("frames") if exception else None
    if frames:
        frame = frames[-1]
        return f"{frame.get('module') or frame.get('filename') or '?'}.{frame.get('function') or '?'}"
    return context.get("transaction")


def classify(context: dict, reason: Optional[str] = None) -> Classification:
    """Classify an extracted context with the rules; `reason` records why the rules were used."""
    category = categorise(context)
    return Classification(
        category=category,
        severity=grade(category, context),
        summary=summarise(category, context),
        classifier=RULES,
        reason=reason,
    )
