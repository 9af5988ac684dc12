"""A loopback server that speaks the OpenAI `/v1/chat/completions` API, scripted per test.

Replies follow the documented shapes: a chat.completion object with `choices`,
`finish_reason` and `usage`; errors as `{"error": {"message", "type", "param",
"code"}}` with the documented status codes and `Retry-After` headers.
"""

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TRIAGE_REPLY = {"category": "EXTERNAL_API", "severity": "P1_HIGH", "summary": "Upstream answered 503 on GET /inventory."}
DEEP_REPLY = {"root_cause": "The inventory service is overloaded.", "recommended_action": "Check the upstream status page and add a retry with backoff."}


def completion(content, finish_reason="stop", prompt_tokens=120, completion_tokens=30, model="stub-model") -> dict:
    """Return a chat.completion body whose message content is `content` (a dict is JSON-encoded)."""
    if not isinstance(content, str):
        content = json.dumps(content)
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }


def error_body(message, error_type, code=None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


class Reply:
    """One scripted answer: status, JSON body (or raw bytes) and headers, after an optional delay."""

    def __init__(self, status=200, body=None, headers=None, delay=0.0, raw=None):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.delay = delay
        self.raw = raw


def ok(content=None, **kwargs) -> Reply:
    return Reply(200, completion(content if content is not None else TRIAGE_REPLY, **kwargs))


def rate_limited(retry_after="1") -> Reply:
    return Reply(429, error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded"), {"Retry-After": retry_after})


def server_error() -> Reply:
    return Reply(500, error_body("The server had an error while processing your request.", "server_error"))


def unauthorized() -> Reply:
    return Reply(401, error_body("Incorrect API key provided: sk-te****.", "invalid_request_error", "invalid_api_key"))


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_POST(self):
        stub = self.server.stub
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        stub.record(self.path, dict(self.headers), body)

        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send(Reply(404, error_body(f"Unknown path {self.path}", "invalid_request_error")))
        if self.headers.get("Authorization") != f"Bearer {stub.api_key}":
            return self._send(unauthorized())
        self._send(stub.next_reply(body))

    def _send(self, reply: Reply):
        if reply.delay:
            time.sleep(reply.delay)
        data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up after its timeout


class LLMStub:
    """The server plus its script: queued replies first, then the default for each tier."""

    def __init__(self, api_key="sk-test-0123456789abcdef"):
        self.api_key = api_key
        self.requests = []
        self.script = deque()
        self.default_triage = ok(TRIAGE_REPLY)
        self.default_deep = ok(DEEP_REPLY, prompt_tokens=300, completion_tokens=60)
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.stub = self
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> "LLMStub":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def record(self, path, headers, body) -> None:
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body})

    def next_reply(self, body) -> Reply:
        with self._lock:
            if self.script:
                return self.script.popleft()
        system = (body.get("messages") or [{}])[0].get("content", "")
        return self.default_deep if "root_cause" in system else self.default_triage

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self.script.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.script.clear()
            self.default_triage = ok(TRIAGE_REPLY)
            self.default_deep = ok(DEEP_REPLY, prompt_tokens=300, completion_tokens=60)

    def calls(self, tier=None) -> list:
        """Return the recorded requests, optionally only 'bulk' or 'deep' ones."""
        with self._lock:
            requests = list(self.requests)
        if tier is None:
            return requests
        deep = [r for r in requests if "root_cause" in r["body"]["messages"][0]["content"]]
        return deep if tier == "deep" else [r for r in requests if r not in deep]
