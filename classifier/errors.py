"""Errors of the classification domain: bad events and provider failures."""

from typing import Optional

from config.errors import ErrortriageError


class InvalidEventError(ErrortriageError):
    """The payload is not a Sentry event that can be stored; retrying cannot help."""


class LLMError(ErrortriageError):
    """The provider call failed."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class LLMRetryableError(LLMError):
    """A timeout, connection error, 429 or 5xx: the same call may succeed later."""

    def __init__(self, message: str, status: Optional[int] = None, retry_after_seconds: Optional[float] = None):
        super().__init__(message, status)
        self.retry_after_seconds = retry_after_seconds


class LLMPermanentError(LLMError):
    """A 400, 401, 403, 404 or a reply that stayed invalid: retrying cannot help."""
