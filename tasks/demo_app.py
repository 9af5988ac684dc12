"""A small Flask app instrumented with sentry-sdk and the hook, and the local servers it talks to.

Each route fails the way production code fails, by calling a real library:
requests against a closed port, psycopg2 against a database that does not
exist, a JSON body that does not parse, a KeyError in app code, and an
upstream that answers 429 and 503. Sentry itself is a local server that
accepts envelopes, so the demo also shows every event still reaching Sentry.
"""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import requests
from flask import Flask, request
from werkzeug.serving import make_server

from tasks.embedded import free_port

logger = logging.getLogger(__name__)


class _QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        logger.debug("%s %s", self.address_string(), format % args)


class UpstreamHandler(_QuietHandler):
    """A third-party API that is rate limiting (/quote) or down (/inventory)."""

    def do_GET(self):
        if self.path.startswith("/quote"):
            self._reply(429, {"error": "rate limit exceeded, retry later"}, {"Retry-After": "30"})
        elif self.path.startswith("/inventory"):
            self._reply(503, {"error": "service unavailable"}, {"Retry-After": "120"})
        else:
            self._reply(404, {"error": "not found"}, {})

    def _reply(self, status, body, headers):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class SentryIngestHandler(_QuietHandler):
    """Accepts sentry-sdk envelopes on /api/<project>/envelope/ and counts their event items."""

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.headers.get("Content-Encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)
        lines = body.split(b"\n")
        for header_line, payload in zip(lines[1::2], lines[2::2]):
            try:
                item_type = json.loads(header_line).get("type")
            except ValueError:
                continue
            if item_type == "event":
                self.server.events.append(json.loads(payload))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


class _ReceiverHandler(_QuietHandler):
    """Records each JSON body POSTed to it; subclasses send the documented response."""

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            body = None
        status, reply, kind = self.answer(body)
        if status < 300:
            self.server.events.append(body)
        data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class SlackReceiverHandler(_ReceiverHandler):
    """A stand-in for a Slack incoming webhook: `ok`, or 400 `invalid_payload` without text."""

    def answer(self, body):
        if not isinstance(body, dict) or not body.get("text"):
            return 400, "invalid_payload", "text/plain"
        return 200, "ok", "text/plain"


class PagerDutyReceiverHandler(_ReceiverHandler):
    """A stand-in for the PagerDuty Events API v2 enqueue endpoint."""

    def answer(self, body):
        if not isinstance(body, dict) or not body.get("routing_key") or not (body.get("payload") or {}).get("summary"):
            return 400, {"status": "invalid event", "message": "Event object is invalid",
                         "errors": ["routing_key and payload.summary are required"]}, "application/json"
        return 202, {"status": "success", "message": "Event processed", "dedup_key": body.get("dedup_key")}, \
            "application/json"


class LocalServer:
    """A ThreadingHTTPServer on a free loopback port, served from a daemon thread."""

    def __init__(self, handler):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.events = []
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LocalServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def missing_database_url(database_url: str) -> str:
    """Return `database_url` pointing at a database that does not exist on the same server."""
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path="/errortriage_demo_missing"))


def create_app(upstream_url: str, database_url: str, closed_port: int) -> Flask:
    """Build the demo app; every route raises a real exception from a real library."""
    app = Flask("errortriage_demo")

    @app.get("/orders/<int:order_id>/ship")
    def ship_order(order_id):
        # Nothing listens on closed_port, so requests raises ConnectionError.
        requests.post(f"http://127.0.0.1:{closed_port}/shipments", json={"order": order_id}, timeout=2)
        return "shipped"

    @app.get("/reports/daily")
    def daily_report():
        psycopg2.connect(missing_database_url(database_url), connect_timeout=3)
        return "report"

    @app.post("/signup")
    def signup():
        payload = json.loads(request.get_data(as_text=True))
        return {"user": payload["email"]}

    @app.get("/cart/<int:cart_id>")
    def cart(cart_id):
        carts = {1: {"items": []}}
        return {"items": carts[cart_id]["items"]}

    @app.get("/quote")
    def quote():
        response = requests.get(f"{upstream_url}/quote", timeout=5)
        response.raise_for_status()
        return response.json()

    @app.get("/inventory")
    def inventory():
        response = requests.get(f"{upstream_url}/inventory", timeout=5)
        response.raise_for_status()
        return response.json()

    return app


# The requests the demo sends: (method, path, body).
DEMO_REQUESTS = [
    ("GET", "/orders/42/ship", None),
    ("GET", "/reports/daily", None),
    ("POST", "/signup", '{"email": "ada@example.com", "plan": '),
    ("GET", "/cart/7", None),
    ("GET", "/quote", None),
    ("GET", "/inventory", None),
]


class DemoApp:
    """The Flask app served by werkzeug on a free loopback port."""

    def __init__(self, app: Flask):
        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "DemoApp":
        self.thread.start()
        return self

    def send_requests(self) -> list:
        """Send every demo request; return (path, status) pairs."""
        results = []
        for method, path, body in DEMO_REQUESTS:
            response = requests.request(
                method, f"http://127.0.0.1:{self.port}{path}", data=body,
                headers={"Content-Type": "application/json"}, timeout=30,
            )
            results.append((path, response.status_code))
        return results

    def stop(self) -> None:
        self.server.shutdown()
