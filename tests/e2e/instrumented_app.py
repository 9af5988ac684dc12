"""An app instrumented the way the README says, run as its own process by the end-to-end tests.

    python instrumented_app.py MODE

It starts a local Sentry that accepts envelopes, a Flask app with the real
sentry-sdk, FlaskIntegration and ErrortriageIntegration, sends the routes a
request each, and prints one JSON line: the event ids Sentry received, the
events themselves, and the hook's counters. MODE `chained` also sets a
before_send of the app's own that raises for events tagged `boom`.
"""

import json
import sys

import sentry_sdk
from flask import Flask
from sentry_sdk.integrations.flask import FlaskIntegration

from tasks.demo_app import LocalServer, SentryIngestHandler
from tasks.hook import ErrortriageIntegration, hook_counters


def app_before_send(event, hint):
    if event.get("tags", {}).get("boom"):
        raise RuntimeError("the app's own before_send failed")
    event.setdefault("tags", {})["seen_by_app"] = "yes"
    return event


def main(mode: str) -> None:
    sentry = LocalServer(SentryIngestHandler).start()
    options = {}
    if mode == "chained":
        options["before_send"] = app_before_send
    sentry_sdk.init(
        dsn=f"http://public@127.0.0.1:{sentry.port}/1",
        integrations=[FlaskIntegration(), ErrortriageIntegration()],
        release="shop@1.2.3",
        environment="test",
        **options,
    )

    app = Flask("shop")
    app.logger.disabled = True

    @app.get("/cart/<int:cart_id>")
    def cart(cart_id):
        return {"items": {1: []}[cart_id]}

    @app.get("/boom")
    def boom():
        sentry_sdk.set_tag("boom", "1")
        raise ValueError("price must be positive, got -3")

    client = app.test_client()
    client.get("/cart/7")
    if mode == "chained":
        client.get("/boom")

    sentry_sdk.flush(5)
    from tasks import hook

    hook.get_producer().flush(5)
    print(json.dumps({
        "sentry_events": sentry.server.events,
        "counters": hook_counters(),
    }))
    sentry.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "plain")
