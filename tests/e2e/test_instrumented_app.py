"""A real Flask app with the real sentry-sdk and the hook, through real workers, into Postgres."""

import json
import subprocess
import sys
from pathlib import Path

from support.helpers import wait_for

APP = Path(__file__).with_name("instrumented_app.py")


def run_app(env, mode="plain"):
    result = subprocess.run(
        [sys.executable, str(APP), mode], env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def classified_row(store, event_id):
    row = store.fetchone("events_by_id", event_ids=[event_id])
    return row if row and row["classified_at"] is not None else None


def test_app_error_classified_in_postgres(store, worker_env, start_worker):
    start_worker()
    output = run_app(worker_env)

    [event] = output["sentry_events"]
    row = wait_for(lambda: classified_row(store, event["event_id"]), message="classified row")
    assert row["category"] == "LOGIC_ERROR"
    assert "KeyError" in row["summary"]
    assert "GET /cart/7" in row["summary"]
    assert output["counters"]["sent"] == 1
    assert output["counters"]["hook_errors"] == 0


def test_event_reaches_sentry_unchanged(store, worker_env, start_worker):
    output = run_app(worker_env)

    [event] = output["sentry_events"]
    assert event["exception"]["values"][-1]["type"] == "KeyError"
    assert event["release"] == "shop@1.2.3"
    assert "errortriage" not in json.dumps(event.get("tags", {}))


def test_app_before_send_chained(store, worker_env, start_worker):
    start_worker()
    output = run_app(worker_env, mode="chained")

    # The app's before_send ran on the event it returned; the one it raised on was dropped by
    # sentry-sdk, as the SDK documents for a failing before_send.
    assert len(output["sentry_events"]) == 1
    assert output["sentry_events"][0]["tags"]["seen_by_app"] == "yes"
    assert output["counters"]["sent"] == 2
    with store.cursor() as cursor:
        wait_for(lambda: _count_classified(store) == 2, message="both errors classified")
        cursor.execute("SELECT context FROM error_events ORDER BY id")
        types = sorted(row["context"]["exceptions"][-1]["type"] for row in cursor.fetchall())
    assert types == ["KeyError", "ValueError"]


def _count_classified(store):
    with store.cursor() as cursor:
        cursor.execute("SELECT count(*) AS n FROM error_events WHERE classified_at IS NOT NULL")
        return cursor.fetchone()["n"]


def test_preliminary_tags_reach_sentry(store, worker_env, start_worker):
    output = run_app(dict(worker_env, SENTRY_PRELIMINARY_TAGS="true"))

    [event] = output["sentry_events"]
    assert event["tags"]["triage.category"] == "LOGIC_ERROR"
    assert event["tags"]["triage.severity"] in ("P0_CRITICAL", "P1_HIGH", "P2_MEDIUM", "P3_LOW")


def test_no_triage_tags_by_default(store, worker_env, start_worker):
    output = run_app(worker_env)

    [event] = output["sentry_events"]
    assert "triage.category" not in event.get("tags", {})
