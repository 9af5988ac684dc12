"""7. The app's own before_send raises: our part has already queued the event, and sentry-sdk drops it.

sentry-sdk runs before_send inside its guard for internal exceptions: an
exception from the callback is logged by the SDK's own logger, the event is
not sent, and capture_exception() returns None instead of raising into the app.
"""

import base64
import json

from faultkit import base_env, report


def queued_ids(client) -> list:
    ids = []
    for raw in reversed(client.lrange("bulk", 0, -1)):
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        ids.append(json.loads(body)[0][0]["event_id"])
    return ids


def test_raising_app_callback_still_queues_every_event(own_redis, database_url, start_app, tmp_path):
    env = base_env(database_url, own_redis.url, SPOOL_DIR=tmp_path / "spool")
    app = start_app(env, mode="raising")

    answer = app.call("burst", count=50, label="app-callback-raises")
    drained = app.call("drain", timeout=30)
    state = app.call("counters")

    seen = [event_id for event_id in answer["seen_ids"] if event_id]
    queued = queued_ids(own_redis.client())
    report("app before_send raises", {"produced": len(seen), "queued": len(queued),
                                      "sentry_events": state["sentry_events"], "lost": len(set(seen) - set(queued))})

    # The app saw no exception and no event id: sentry-sdk dropped each event.
    assert answer["event_ids"] == []
    assert state["sentry_events"] == 0
    # Our part ran first on every event and delivered all of them, in order.
    assert len(seen) == 50
    assert queued == seen
    assert drained["drained"]
    assert drained["counters"]["sent"] == 50
    assert drained["counters"]["hook_errors"] == 0
