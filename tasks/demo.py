"""`errortriage demo`: real exceptions from an instrumented app, through Redis and Celery, into Postgres.

Starts what is not configured (embedded Redis and Postgres), the workers and
beat, a local Sentry and upstream, then the Flask app; sends it failing
requests, ingests the bundled Sentry event files, waits until every event is
classified, prints the table, and stops everything it started.
"""

import logging
import os
import time
from contextlib import ExitStack
from pathlib import Path

import sentry_sdk
from sentry_sdk.integrations.flask import FlaskIntegration

from config import load_settings
from tasks import demo_app, processes
from tasks.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from tasks.store import Store

logger = logging.getLogger(__name__)

BUNDLED_EVENTS = Path(__file__).resolve().parent.parent / "tests" / "data" / "events"


def _wait_classified(store: Store, event_ids: set, timeout: float, echo) -> bool:
    """Poll until every event id has a classified row and no deep analysis is pending."""
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while time.monotonic() < deadline:
        rows = store.fetchall("events_by_id", event_ids=list(event_ids))
        classified = [row for row in rows if row["classified_at"] is not None]
        pending_deep = [row for row in rows if row["deep_status"] == "queued"]
        if len(classified) == len(event_ids) and not pending_deep:
            return True
        if time.monotonic() - last_report > 5:
            echo(f"  waiting: {len(rows)} of {len(event_ids)} stored, {len(classified)} classified, "
                 f"{len(pending_deep)} deep analyses pending")
            last_report = time.monotonic()
        time.sleep(0.5)
    return False


def run_demo(state_dir: Path, echo, timeout: float = 180.0) -> int:
    """Run the demo end to end; return the process exit code."""
    from tasks.cli import ingest_files, print_table

    settings = load_settings()
    with ExitStack() as stack:
        redis_url = settings.redis_url
        if not redis_url:
            redis = stack.enter_context(_stopping(EmbeddedRedis(state_dir / "redis").start()))
            redis_url = redis.url
            echo(f"started embedded Redis on {redis_url}")
        database_url = settings.database_url
        if not database_url:
            postgres = stack.enter_context(_stopping(EmbeddedPostgres(state_dir / "postgres").start()))
            # A new database each run, so a second demo shows the same table and notifications.
            database_url = postgres.fresh_database("errortriage_demo")
            echo(f"started embedded Postgres in {state_dir / 'postgres'}")

        env = dict(os.environ, REDIS_URL=redis_url, DATABASE_URL=database_url)
        env.setdefault("SWEEP_INTERVAL_SECONDS", "15")
        env.setdefault("STALE_AFTER_SECONDS", "30")
        receivers = _start_notify_receivers(stack, env, echo)
        os.environ.update(REDIS_URL=redis_url, DATABASE_URL=database_url)
        settings = load_settings()
        if settings.use_llm:
            echo(f"classifying with {settings.bulk_model} (deep: {settings.deep_model}) at {settings.llm_base_url}")
        else:
            echo("no LLM_API_KEY configured (or USE_FALLBACK_CLASSIFIER=true): classifying with the rules")

        store = Store(database_url)
        stack.callback(store.close)
        applied = store.migrate()
        echo(f"migrations applied: {', '.join(applied) or 'none needed'}")

        log_dir = state_dir / "logs"
        children = [
            processes.worker(settings.bulk_queue, env, log_dir, concurrency=2, name="demo-bulk"),
            processes.worker(settings.deep_queue, env, log_dir, concurrency=1, name="demo-deep"),
            processes.beat(env, log_dir),
            processes.worker(settings.notify_queue, env, log_dir, concurrency=1, name="demo-notify"),
        ]
        for child in children:
            stack.callback(child.stop)
            child.start()
        echo(f"started bulk, deep and notify workers and beat (logs in {log_dir})")

        sentry = stack.enter_context(_stopping(demo_app.LocalServer(demo_app.SentryIngestHandler).start()))
        upstream = stack.enter_context(_stopping(demo_app.LocalServer(demo_app.UpstreamHandler).start()))

        from tasks import hook

        producer = hook.configure(settings)
        sentry_sdk.init(
            dsn=f"http://public@127.0.0.1:{sentry.port}/1",
            integrations=[FlaskIntegration(), hook.ErrortriageIntegration()],
            environment="demo",
            release="errortriage-demo@1",
        )
        stack.callback(sentry_sdk.flush, 5)
        app = demo_app.create_app(upstream.url, database_url, closed_port=free_port())
        # The failures are intended: keep Flask's tracebacks and access lines off the terminal.
        app.logger.disabled = True
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = stack.enter_context(_stopping(demo_app.DemoApp(app).start()))

        for path, status in server.send_requests():
            echo(f"  app {path} -> HTTP {status}")
        producer.flush(10)
        sentry_sdk.flush(5)
        app_event_ids = {event["event_id"] for event in sentry.server.events}
        echo(f"the app raised {len(app_event_ids)} errors; local Sentry received {len(sentry.server.events)} events")

        files = sorted(BUNDLED_EVENTS.glob("*.json"))
        ingested, failures = ingest_files(files, settings)
        echo(f"ingested {len(ingested)} bundled Sentry event files ({failures} failed)")

        event_ids = app_event_ids | set(ingested)
        for child in children[:2]:
            child.wait_ready()
        if not _wait_classified(store, event_ids, timeout, echo):
            echo(f"timed out after {timeout:.0f}s waiting for classification; see the logs in {log_dir}")
            return 1
        rows = store.fetchall("events_by_id", event_ids=list(event_ids))
        print_table(rows, echo)
        _show_notifications(store, env, event_ids, receivers, echo)
        echo(f"{len(rows)} events classified; stopping workers, beat and servers")
        return 0 if failures == 0 else 1


def _start_notify_receivers(stack: ExitStack, env: dict, echo) -> dict:
    """Start loopback Slack and PagerDuty receivers for the channels the user did not configure."""
    receivers = {}
    if not env.get("SLACK_WEBHOOK_URL"):
        slack = stack.enter_context(_stopping(demo_app.LocalServer(demo_app.SlackReceiverHandler).start()))
        env["SLACK_WEBHOOK_URL"] = f"{slack.url}/services/DEMO/DEMO/demo"
        env.setdefault("SLACK_MIN_SEVERITY", "P1_HIGH")
        receivers["slack"] = slack
    if not env.get("PAGERDUTY_ROUTING_KEY"):
        pagerduty = stack.enter_context(_stopping(demo_app.LocalServer(demo_app.PagerDutyReceiverHandler).start()))
        env.update(PAGERDUTY_EVENTS_URL=f"{pagerduty.url}/v2/enqueue", PAGERDUTY_ROUTING_KEY="demo" * 8)
        # The demo pages for P1 as well, so both P0 and P1 events show a trigger.
        env.setdefault("PAGERDUTY_MIN_SEVERITY", "P1_HIGH")
        receivers["pagerduty"] = pagerduty
    if receivers:
        echo(f"started local {' and '.join(receivers)} receivers on 127.0.0.1 for notifications")
    return receivers


def _show_notifications(store: Store, env: dict, event_ids: set, receivers: dict, echo, timeout: float = 60.0) -> None:
    """Wait until the notify worker has settled every delivery the workers queued, then print what the receivers got."""
    from config.settings import SEVERITIES
    from tasks.notify import PAGERDUTY, SLACK

    config = load_settings(env)
    thresholds = {SLACK: config.slack_min_severity, PAGERDUTY: config.pagerduty_min_severity}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        unsettled = sum(
            store.fetchone("notify_unsettled", channels=[channel], event_ids=list(event_ids),
                           severities=list(SEVERITIES[: SEVERITIES.index(threshold) + 1]))["unsettled"]
            for channel, threshold in thresholds.items()
        )
        if unsettled == 0:
            break
        time.sleep(0.5)
    else:
        echo(f"notifications still pending after {timeout:.0f}s; see the notify worker's log")
    if SLACK in receivers:
        messages = receivers[SLACK].server.events
        echo(f"Slack receiver got {len(messages)} messages (one per P0/P1 fingerprint):")
        for message in messages:
            echo("  " + message["text"].splitlines()[0])
    if PAGERDUTY in receivers:
        triggers = receivers[PAGERDUTY].server.events
        echo(f"PagerDuty receiver got {len(triggers)} triggers:")
        for trigger in triggers:
            echo(f"  {trigger['payload']['severity']:<8} {trigger['dedup_key'][:28]}  {trigger['payload']['summary'][:90]}")


class _stopping:
    """Context manager that calls `.stop()` on exit."""

    def __init__(self, thing):
        self.thing = thing

    def __enter__(self):
        return self.thing

    def __exit__(self, *exc_info):
        self.thing.stop()
        return False
