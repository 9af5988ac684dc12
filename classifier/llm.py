"""Client for any OpenAI-compatible `/chat/completions` API, and strict reply validation.

Errors are sorted for the caller: LLMRetryableError for timeouts, connection
errors, 429 and 5xx (the task retries later), LLMPermanentError for 4xx and
replies that stay invalid after one more call (the task falls back to rules).
"""

import email.utils
import json
import logging
import re
import time
from typing import Optional

import requests

from classifier import prompts
from classifier.errors import LLMPermanentError, LLMRetryableError
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
    """The provider answered 200 but the content does not match the schema."""


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
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
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


class LLMClient:
    """Calls `{base_url}/chat/completions` with Bearer auth and JSON output requested."""

    def __init__(self, base_url: str, api_key: str, timeout_seconds: float = 30.0, max_tokens: int = 400):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout = (CONNECT_TIMEOUT_SECONDS, timeout_seconds)
        self.max_tokens = max_tokens
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def complete_json(self, model: str, messages: list) -> tuple:
        """Make one call; return (parsed JSON object, Usage) or raise an LLMError or InvalidReply."""
        body = {
            "model": model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "response_format": {"type": "json_object"},
        }
        try:
            response = self.session.post(self.url, json=body, timeout=self.timeout)
        except requests.Timeout as error:
            raise LLMRetryableError(f"provider timed out: {type(error).__name__}") from error
        except requests.RequestException as error:
            raise LLMRetryableError(f"provider unreachable: {type(error).__name__}") from error

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

    def _validated(self, model: str, messages: list, parse) -> tuple:
        """Call and validate, calling once more if the first reply is invalid."""
        spent = Usage()
        last_problem = ""
        for attempt in (1, 2):
            try:
                payload, usage = self.complete_json(model, messages)
                spent = Usage(spent.prompt_tokens + usage.prompt_tokens, spent.completion_tokens + usage.completion_tokens)
                return parse(payload), spent
            except InvalidReply as problem:
                if len(problem.args) > 1 and isinstance(problem.args[1], Usage):
                    extra = problem.args[1]
                    spent = Usage(spent.prompt_tokens + extra.prompt_tokens, spent.completion_tokens + extra.completion_tokens)
                last_problem = str(problem.args[0])
                logger.warning("invalid reply from %s (attempt %d of 2): %s", model, attempt, last_problem)
        raise LLMPermanentError(f"invalid reply after 2 attempts: {last_problem}")

    def classify(self, context: dict, model: str) -> Classification:
        """Classify a scrubbed context with the bulk model."""
        (category, severity, summary), usage = self._validated(model, prompts.triage_messages(context), parse_triage)
        return Classification(category=category, severity=severity, summary=summary, classifier=model, usage=usage)

    def analyse(self, context: dict, classification: dict, model: str) -> DeepAnalysis:
        """Ask the deep model for root cause and recommended action."""
        messages = prompts.deep_messages(
            context, classification["category"], classification["severity"], classification["summary"]
        )
        (root_cause, action), usage = self._validated(model, messages, parse_deep)
        return DeepAnalysis(root_cause=root_cause, recommended_action=action, classifier=model, usage=usage)
