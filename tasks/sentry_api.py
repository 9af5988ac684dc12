"""A small client of the Sentry web API: find an event's issue, set its priority, comment on it.

Endpoints (the same on sentry.io and self-hosted Sentry, under SENTRY_BASE_URL):

    GET  /api/0/projects/{org}/{project}/events/{event_id}/   -> {"groupID": ...}; 404 until ingested
    PUT  /api/0/organizations/{org}/issues/{issue_id}/         {"priority": "high"}
    POST /api/0/organizations/{org}/issues/{issue_id}/comments/ {"text": ...}

Older self-hosted versions only serve the issue endpoints without the
organization prefix (/api/0/issues/{issue_id}/...); a 404 on the prefixed path
is tried once more there. Every response's X-Sentry-Rate-Limit-Remaining and
X-Sentry-Rate-Limit-Reset headers are read: when the budget is spent, calls
stop until the reset time instead of earning 429s.
"""

import logging
import os
import threading
import time
from typing import Optional
from urllib.parse import quote

import requests

from config.errors import ErrortriageError
from config.settings import mask_secret

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 15.0
# Used when a 429 carries neither Retry-After nor a reset time.
DEFAULT_RATE_LIMIT_WAIT_SECONDS = 30.0
# Upper bound of any rate-limit wait (_pause_for and the 429 path cap at it), so clock skew cannot park a task for hours.
MAX_RATE_LIMIT_WAIT_SECONDS = 300.0

# P0/P1 -> high, P2 -> medium, P3 -> low: Sentry's issue priorities.
PRIORITY_BY_SEVERITY = {
    "P0_CRITICAL": "high",
    "P1_HIGH": "high",
    "P2_MEDIUM": "medium",
    "P3_LOW": "low",
}

PERMANENT_STATUSES = {400, 401, 403, 404, 405, 410, 422}


class SentryAPIError(ErrortriageError):
    """A call failed. `permanent` tells whether retrying can help; `retry_after` is a hint in seconds."""

    def __init__(self, message: str, status: Optional[int] = None, permanent: bool = False,
                 retry_after: Optional[float] = None):
        super().__init__(message)
        self.status = status
        self.permanent = permanent
        self.retry_after = retry_after


# Process-wide: the monotonic time before which no call is made, set from the rate-limit headers.
_paused_until = 0.0
_pause_lock = threading.Lock()


def _pause_for(seconds: float) -> None:
    global _paused_until
    seconds = max(0.0, min(seconds, MAX_RATE_LIMIT_WAIT_SECONDS))
    with _pause_lock:
        _paused_until = max(_paused_until, time.monotonic() + seconds)


def paused_seconds() -> float:
    """Seconds left before the rate-limit budget resets; 0 when calls may go out."""
    return max(0.0, _paused_until - time.monotonic())


def reset_rate_limit() -> None:
    """Forget any pause (tests, or a new process)."""
    global _paused_until
    with _pause_lock:
        _paused_until = 0.0


def _seconds_until_reset(headers) -> Optional[float]:
    reset = headers.get("X-Sentry-Rate-Limit-Reset")
    if not reset:
        return None
    try:
        return max(0.0, float(reset) - time.time())
    except ValueError:
        return None


def _retry_after(headers) -> Optional[float]:
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    return _seconds_until_reset(headers)


def issue_priority(severity: str) -> str:
    """Return Sentry's priority for one of our severities."""
    return PRIORITY_BY_SEVERITY[severity]


class SentryAPI:
    """Calls the Sentry API with a bearer token; one requests.Session per process."""

    def __init__(self, base_url: str, token: str, org: str, project: str):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.org = org
        self.project = project
        self._session: Optional[requests.Session] = None
        self._session_pid: Optional[int] = None

    def __repr__(self) -> str:
        return f"SentryAPI({self.base_url!r}, token={mask_secret(self.token)!r}, org={self.org!r})"

    def _http(self) -> requests.Session:
        # A session inherited through fork shares its sockets with the parent.
        if self._session is None or self._session_pid != os.getpid():
            self._session = requests.Session()
            self._session.headers["Authorization"] = f"Bearer {self.token}"
            self._session_pid = os.getpid()
        return self._session

    def issue_url(self, issue_id: str) -> str:
        """Return the web page of an issue, for links in messages."""
        return f"{self.base_url}/organizations/{quote(self.org, safe='')}/issues/{quote(str(issue_id), safe='')}/"

    def _request(self, method: str, path: str, action: str, json_body=None) -> requests.Response:
        wait = paused_seconds()
        if wait > 0:
            raise SentryAPIError(f"{action}: rate-limit budget spent, waiting {wait:.0f}s", retry_after=wait)
        try:
            response = self._http().request(
                method, self.base_url + path, json=json_body,
                timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS),
            )
        except requests.RequestException as error:
            raise SentryAPIError(f"{action}: {type(error).__name__}") from None
        remaining = response.headers.get("X-Sentry-Rate-Limit-Remaining")
        if remaining is not None and remaining.strip() == "0":
            # The next call in this window would be refused: hold off until the reset.
            _pause_for(_seconds_until_reset(response.headers) or DEFAULT_RATE_LIMIT_WAIT_SECONDS)
        if response.status_code == 429:
            wait = min(_retry_after(response.headers) or DEFAULT_RATE_LIMIT_WAIT_SECONDS, MAX_RATE_LIMIT_WAIT_SECONDS)
            _pause_for(wait)
            raise SentryAPIError(f"{action}: HTTP 429 rate limited", status=429, retry_after=wait)
        return response

    def _fail(self, response: requests.Response, action: str) -> SentryAPIError:
        detail = ""
        try:
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("detail"), str):
                detail = f": {body['detail'][:200]}"
        except ValueError:
            pass
        status = response.status_code
        return SentryAPIError(f"{action}: HTTP {status}{detail}", status=status, permanent=status in PERMANENT_STATUSES)

    def find_issue(self, event_id: str) -> Optional[str]:
        """Return the issue id (groupID) of an event, or None while Sentry has not ingested it (404)."""
        path = (f"/api/0/projects/{quote(self.org, safe='')}/{quote(self.project, safe='')}"
                f"/events/{quote(event_id, safe='')}/")
        response = self._request("GET", path, "event lookup")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, "event lookup")
        try:
            group_id = response.json().get("groupID")
        except (ValueError, AttributeError):
            group_id = None
        if not group_id:
            raise SentryAPIError("event lookup: the reply has no groupID")
        return str(group_id)

    def _issue_call(self, method: str, issue_id: str, suffix: str, body: dict, action: str) -> None:
        issue = quote(str(issue_id), safe="")
        paths = (
            f"/api/0/organizations/{quote(self.org, safe='')}/issues/{issue}/{suffix}",
            f"/api/0/issues/{issue}/{suffix}",  # self-hosted versions without the organization prefix
        )
        for index, path in enumerate(paths):
            response = self._request(method, path, action, json_body=body)
            if response.status_code in (200, 201, 202, 204):
                return
            if response.status_code == 404 and index == 0:
                continue
            raise self._fail(response, action)

    def set_priority(self, issue_id: str, priority: str) -> None:
        """Set an issue's priority (high, medium or low)."""
        self._issue_call("PUT", issue_id, "", {"priority": priority}, "set priority")

    def add_comment(self, issue_id: str, text: str) -> None:
        """Add a comment to an issue; needs a token that acts for a user."""
        self._issue_call("POST", issue_id, "comments/", {"text": text}, "add comment")
