"""Client for any OpenAI-compatible `/chat/completions` API, and strict reply validation.

Errors are sorted for the caller: LLMRetryableError for timeouts, connection
errors, 429 and 5xx (the task retries later), LLMPermanentError for 4xx and
replies that stay invalid after one more call (the task falls back to rules).
"""

import dataclasses
import email.utils
import json
import logging
import re
import time
from typing import Callable, Optional

import requests

from classifier import prompts
from classifier.errors import LLMError, LLMPermanentError, LLMRetryableError
from classifier.schema import (
    MAX_ACTION_WORDS,
    MAX_ROOT_CAUSE_WORDS,
    MAX_SUMMARY_CHARS,
    Category,
    Classification,
    DeepAnalysis,
    Severity,
    Usage,
)

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
MAX_RETRY_AFTER_SECONDS = 300.0

_SHORT_SEVERITIES = {severity.value[:2]: severity for severity in Severity}


class InvalidReply(ValueError):
    """The provider returned 200 but the content does not match the schema."""


def _retry_after_seconds(response: requests.Response) -> Optional[float]:
    """Read `retry-after-ms` or `Retry-After` (seconds or an HTTP date), capped."""
    millis = response.headers.get("retry-after-ms")
    if millis:
        try:
            return min(float(millis) / 1000.0, MAX_RETRY_AFTER_SECONDS)
        except ValueError:
            pass
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_SECONDS)
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(parsed.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_SECONDS)


def _error_code(response: requests.Response) -> str:
    """Return the provider's error code or type from an OpenAI-style error body, if any."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    if isinstance(error, dict):
        return str(error.get("code") or error.get("type") or "")
    return ""


def _strip_fences(content: str) -> str:
    content = content.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", content, re.S)
    return fenced.group(1) if fenced else content


def _enum_value(enum_type, raw) -> object:
    if not isinstance(raw, str):
        raise InvalidReply(f"{enum_type.__name__.lower()} is {type(raw).__name__}, not a string")
    value = raw.strip().upper().replace(" ", "_").replace("-", "_")
    if enum_type is Severity and value in _SHORT_SEVERITIES:
        return _SHORT_SEVERITIES[value]
    try:
        return enum_type(value)
    except ValueError:
        raise InvalidReply(f"unknown {enum_type.__name__.lower()} {raw!r}") from None


def _bounded_text(payload: dict, key: str, max_chars: int = 0, max_words: int = 0) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidReply(f"missing or empty {key!r}")
    value = " ".join(value.split())
    if max_chars and len(value) > max_chars:
        raise InvalidReply(f"{key!r} has {len(value)} characters, more than {max_chars}")
    if max_words and len(value.split()) > max_words:
        raise InvalidReply(f"{key!r} has {len(value.split())} words, more than {max_words}")
    return value


def parse_triage(payload: dict) -> tuple:
    """Validate a triage reply; return (category, severity, summary) or raise InvalidReply."""
    return (
        _enum_value(Category, payload.get("category")),
        _enum_value(Severity, payload.get("severity")),
        _bounded_text(payload, "summary", max_chars=MAX_SUMMARY_CHARS),
    )


def parse_deep(payload: dict) -> tuple:
    """Validate a deep-analysis reply; return (root_cause, recommended_action)."""
    return (
        _bounded_text(payload, "root_cause", max_words=MAX_ROOT_CAUSE_WORDS),
        _bounded_text(payload, "recommended_action", max_words=MAX_ACTION_WORDS),
    )


# JSON schemas sent as `response_format: json_schema`; providers that reject
# that format get `json_object`, and the reply is validated the same way.
TRIAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": [category.value for category in Category]},
        "severity": {"type": "string", "enum": [severity.value for severity in Severity]},
        "summary": {"type": "string", "maxLength": MAX_SUMMARY_CHARS},
    },
    "required": ["category", "severity", "summary"],
    "additionalProperties": False,
}
DEEP_SCHEMA = {
    "type": "object",
    "properties": {"root_cause": {"type": "string"}, "recommended_action": {"type": "string"}},
    "required": ["root_cause", "recommended_action"],
    "additionalProperties": False,
}


@dataclasses.dataclass(frozen=True)
class CallRecord:
    """One HTTP call to the provider, as reported to the client's observer."""

    model: str
    usage: Usage
    latency_seconds: float
    outcome: str


def _rejects_response_format(response: requests.Response) -> bool:
    """Return True when a 400 reports that the provider does not support the requested response_format."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return False
    if not isinstance(error, dict):
        return False
    text = f"{error.get('param') or ''} {error.get('message') or ''}".lower()
    return "response_format" in text or "json_schema" in text


class LLMClient:
    """Calls `{base_url}/chat/completions` with Bearer auth and JSON output requested.

    `observer`, when given, is called with a CallRecord after every HTTP call,
    failed ones included, so token use and cost are recorded per call.
    """

    def __init__(self, base_url: str, api_key: str, timeout_seconds: float = 30.0, max_tokens: int = 400,
                 observer: Optional[Callable[[CallRecord], None]] = None):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout = (CONNECT_TIMEOUT_SECONDS, timeout_seconds)
        self.max_tokens = max_tokens
        self.observer = observer
        self.json_schema_supported = True
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def _response_format(self, schema_name: str, schema: Optional[dict]) -> dict:
        if schema is None or not self.json_schema_supported:
            return {"type": "json_object"}
        return {"type": "json_schema", "json_schema": {"name": schema_name, "schema": schema, "strict": True}}

    def complete_json(self, model: str, messages: list, schema_name: str = "reply", schema: Optional[dict] = None,
                      observer: Optional[Callable[[CallRecord], None]] = None) -> tuple:
        """Make one call; return (parsed JSON object, Usage) or raise an LLMError or InvalidReply.

        `observer` (default: the client's) hears about the call whatever its outcome.
        """
        observer = observer or self.observer
        started = time.monotonic()
        failure: Optional[Exception] = None
        try:
            result = self._complete_json(model, messages, schema_name, schema)
            usage, outcome = result[1], "ok"
        except InvalidReply as problem:
            failure = problem
            usage = problem.args[1] if len(problem.args) > 1 else Usage()
            outcome = f"invalid: {problem.args[0]}"
        except LLMError as error:
            failure = error
            usage = Usage()
            kind = "retryable" if isinstance(error, LLMRetryableError) else "permanent"
            outcome = f"{kind}: {error}"
        if observer is not None:
            observer(CallRecord(model, usage, time.monotonic() - started, outcome))
        if failure is not None:
            raise failure
        return result

    def _post(self, body: dict) -> requests.Response:
        try:
            return self.session.post(self.url, json=body, timeout=self.timeout)
        except requests.Timeout as error:
            raise LLMRetryableError(f"provider timed out: {type(error).__name__}") from error
        except requests.RequestException as error:
            raise LLMRetryableError(f"provider unreachable: {type(error).__name__}") from error

    def _complete_json(self, model: str, messages: list, schema_name: str, schema: Optional[dict]) -> tuple:
        body = {
            "model": model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "response_format": self._response_format(schema_name, schema),
        }
        response = self._post(body)
        if response.status_code == 400 and schema is not None and self.json_schema_supported \
                and _rejects_response_format(response):
            logger.warning("provider rejected response_format json_schema; using json_object from now on")
            self.json_schema_supported = False
            body["response_format"] = {"type": "json_object"}
            response = self._post(body)

        status = response.status_code
        if status == 429:
            code = _error_code(response)
            if code == "insufficient_quota":
                raise LLMPermanentError("provider quota exhausted (insufficient_quota)", status)
            raise LLMRetryableError("provider rate limit (429)", status, _retry_after_seconds(response))
        if status >= 500:
            raise LLMRetryableError(f"provider error {status}", status, _retry_after_seconds(response))
        if status >= 400:
            code = _error_code(response)
            raise LLMPermanentError(f"provider rejected the request: {status} {code}".strip(), status)

        try:
            reply = response.json()
            choice = reply["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise InvalidReply("reply is not a chat completion") from None
        usage = reply.get("usage") if isinstance(reply, dict) else None
        usage = Usage(
            prompt_tokens=int((usage or {}).get("prompt_tokens") or 0),
            completion_tokens=int((usage or {}).get("completion_tokens") or 0),
        )
        if choice.get("finish_reason") == "length":
            raise InvalidReply("reply was cut at max_tokens (finish_reason: length)", usage)
        if not isinstance(content, str):
            raise InvalidReply("reply content is not text", usage)
        try:
            parsed = json.loads(_strip_fences(content))
        except ValueError:
            raise InvalidReply("reply content is not JSON", usage) from None
        if not isinstance(parsed, dict):
            raise InvalidReply("reply JSON is not an object", usage)
        return parsed, usage

    def _validated(self, model: str, messages: list, parse, schema_name: str, schema: dict, observer=None) -> tuple:
        """Call and validate, calling once more if the first reply is invalid."""
        spent = Usage()
        last_problem = ""
        for attempt in (1, 2):
            try:
                payload, usage = self.complete_json(model, messages, schema_name, schema, observer)
                spent = Usage(spent.prompt_tokens + usage.prompt_tokens, spent.completion_tokens + usage.completion_tokens)
                return parse(payload), spent
            except InvalidReply as problem:
                if len(problem.args) > 1 and isinstance(problem.args[1], Usage):
                    extra = problem.args[1]
                    spent = Usage(spent.prompt_tokens + extra.prompt_tokens, spent.completion_tokens + extra.completion_tokens)
                last_problem = str(problem.args[0])
                logger.warning("invalid reply from %s (attempt %d of 2): %s", model, attempt, last_problem)
        raise LLMPermanentError(f"invalid reply after 2 attempts: {last_problem}")

    def classify(self, context: dict, model: str, observer=None) -> Classification:
        """Classify a scrubbed context with the bulk model."""
        messages = prompts.triage_messages(context)
        (category, severity, summary), usage = self._validated(
            model, messages, parse_triage, "triage", TRIAGE_SCHEMA, observer
        )
        return Classification(category=category, severity=severity, summary=summary, classifier=model, usage=usage)

    def analyse(self, context: dict, classification: dict, model: str, observer=None) -> DeepAnalysis:
        """Ask the deep model for root cause and recommended action."""
        messages = prompts.deep_messages(
            context, classification["category"], classification["severity"], classification["summary"]
        )
        (root_cause, action), usage = self._validated(
            model, messages, parse_deep, "deep_analysis", DEEP_SCHEMA, observer
        )
        return DeepAnalysis(root_cause=root_cause, recommended_action=action, classifier=model, usage=usage)
