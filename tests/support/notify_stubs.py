"""Loopback servers that answer like Slack incoming webhooks, PagerDuty Events API v2 and the Sentry web API.

Each records every request (method, path, headers, JSON body) and answers
from a script of queued replies, then from its default. The replies follow
the documented shapes:

- Slack: 200 with body `ok`; 400 `invalid_payload`; 404 `no_service`; 429 with Retry-After.
- PagerDuty: 202 {"status": "success", "message": "Event processed", "dedup_key": ...};
  400 {"status": "invalid event", "message": ..., "errors": [...]}; 429.
- Sentry: event lookup 404 before ingestion, then 200 with groupID; issue
  update 200; comments 201, or 403 for a token that does not act for a user;
  429 with Retry-After and the X-Sentry-Rate-Limit-* headers.
"""

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Reply:
    """One scripted answer: status, body (dict -> JSON, str -> text) and headers."""

    def __init__(self, status=200, body=None, headers=None):
        self.status = status
        self.body = body
        self.headers = headers or {}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        stub = self.server.stub
        request = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body,
                   "at": time.monotonic()}
        reply = stub.answer(request)
        stub.record(request)
        if isinstance(reply.body, (dict, list)):
            data, kind = json.dumps(reply.body).encode(), "application/json"
        else:
            data, kind = (reply.body or "").encode(), "text/html"
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PUT = _handle


class _Stub:
    """A ThreadingHTTPServer on 127.0.0.1 with a reply script and a request log."""

    def __init__(self):
        self.requests = []
        self.script = deque()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.stub = self
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def queue(self, *replies) -> None:
        with self._lock:
            self.script.extend(replies)

    def record(self, request) -> None:
        with self._lock:
            self.requests.append(request)

    def answer(self, request) -> Reply:
        with self._lock:
            if self.script:
                return self.script.popleft()
        return self.default(request)

    def default(self, request) -> Reply:
        raise NotImplementedError

    def calls(self, method=None, contains=None) -> list:
        with self._lock:
            found = list(self.requests)
        if method:
            found = [r for r in found if r["method"] == method]
        if contains:
            found = [r for r in found if contains in r["path"]]
        return found


class SlackStub(_Stub):
    """An incoming webhook at /services/T000/B000/<secret>."""

    SECRET_PATH = "/services/T0000TEST/B0000TEST/abcdefghijklmnopqrstuvwx"

    @property
    def url(self) -> str:
        return self.base_url + self.SECRET_PATH

    def default(self, request) -> Reply:
        if request["path"] != self.SECRET_PATH:
            return no_service()
        if not isinstance(request["body"], dict) or not request["body"].get("text"):
            return Reply(400, "invalid_payload")
        return Reply(200, "ok")

    def messages(self) -> list:
        return [r["body"]["text"] for r in self.calls("POST") if isinstance(r["body"], dict)]


def no_service() -> Reply:
    return Reply(404, "no_service")


def slack_rate_limited(retry_after="1") -> Reply:
    return Reply(429, "rate_limited", {"Retry-After": retry_after})


class PagerDutyStub(_Stub):
    """The Events API v2 at /v2/enqueue."""

    @property
    def url(self) -> str:
        return self.base_url + "/v2/enqueue"

    def default(self, request) -> Reply:
        body = request["body"]
        errors = []
        if request["path"] != "/v2/enqueue":
            return Reply(404, {"status": "not found"})
        if not isinstance(body, dict):
            return Reply(400, {"status": "invalid event", "message": "Event object is invalid", "errors": ["body is not JSON"]})
        if not body.get("routing_key"):
            errors.append("'routing_key' is missing or blank")
        payload = body.get("payload") or {}
        if body.get("event_action") == "trigger":
            for field in ("summary", "source", "severity"):
                if not payload.get(field):
                    errors.append(f"'payload.{field}' is missing or blank")
            if len(payload.get("summary") or "") > 1024:
                errors.append("'payload.summary' is longer than 1024 characters")
            if payload.get("severity") not in ("critical", "error", "warning", "info"):
                errors.append("'payload.severity' is invalid")
        if len(body.get("dedup_key") or "") > 255:
            errors.append("'dedup_key' is longer than 255 characters")
        if errors:
            return Reply(400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors})
        return Reply(202, {"status": "success", "message": "Event processed", "dedup_key": body.get("dedup_key")})

    def triggers(self) -> list:
        return [r["body"] for r in self.calls("POST") if isinstance(r["body"], dict)]


def pagerduty_invalid() -> Reply:
    return Reply(400, {"status": "invalid event", "message": "Event object is invalid",
                       "errors": ["Length of 'routing_key' is incorrect (should be 32 characters)"]})


def pagerduty_rate_limited() -> Reply:
    return Reply(429, {"status": "throttle event", "message": "Requests for this service are arriving too quickly."})


class SentryStub(_Stub):
    """The Sentry web API for one organization and project, with a bearer token.

    `ingest(event_id, group_id)` makes an event known; before that its lookup answers 404.
    """

    def __init__(self, token="sntryu_test_0123456789abcdef", org="acme", project="shop"):
        super().__init__()
        self.token = token
        self.org = org
        self.project = project
        self.groups = {}
        self.priorities = {}
        self.comments = {}
        self.comments_forbidden = False

    def ingest(self, event_id: str, group_id: str) -> None:
        with self._lock:
            self.groups[event_id] = group_id

    def default(self, request) -> Reply:
        if request["headers"].get("Authorization") != f"Bearer {self.token}":
            return Reply(401, {"detail": "Invalid token"})
        path = request["path"]
        event_prefix = f"/api/0/projects/{self.org}/{self.project}/events/"
        issue_prefix = f"/api/0/organizations/{self.org}/issues/"
        if request["method"] == "GET" and path.startswith(event_prefix):
            event_id = path[len(event_prefix):].strip("/")
            with self._lock:
                group = self.groups.get(event_id)
            if group is None:
                return Reply(404, {"detail": "Event not found"})
            return Reply(200, {"eventID": event_id, "id": "1", "groupID": group, "tags": []})
        if path.startswith(issue_prefix):
            rest = path[len(issue_prefix):].strip("/").split("/")
            issue_id = rest[0]
            if request["method"] == "PUT" and len(rest) == 1:
                with self._lock:
                    self.priorities[issue_id] = (request["body"] or {}).get("priority")
                return Reply(200, {"id": issue_id, "priority": self.priorities[issue_id]})
            if request["method"] == "POST" and rest[1:] == ["comments"]:
                if self.comments_forbidden:
                    return Reply(403, {"detail": "You do not have permission to perform this action."})
                with self._lock:
                    self.comments.setdefault(issue_id, []).append((request["body"] or {}).get("text"))
                return Reply(201, {"id": "55", "type": "note", "data": {"text": (request["body"] or {}).get("text")}})
        return Reply(404, {"detail": "Not found"})


def sentry_rate_limited(retry_after="1") -> Reply:
    reset = str(int(time.time()) + int(float(retry_after)))
    return Reply(429, {"detail": "You are attempting to use this endpoint too frequently."},
                 {"Retry-After": retry_after, "X-Sentry-Rate-Limit-Limit": "40",
                  "X-Sentry-Rate-Limit-Remaining": "0", "X-Sentry-Rate-Limit-Reset": reset})
