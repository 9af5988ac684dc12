"""An instrumented app for the fault cases, run as its own process and driven over stdin.

    python fault_app.py MODE      MODE: plain, or raising (the app's own before_send raises)

It runs the real sentry-sdk with ErrortriageIntegration, delivering to an
in-memory transport (no network), and prints one JSON line per command:

    {"cmd": "burst", "count": N, "label": "x"}  raise N distinct errors, capture each
    {"cmd": "drain", "timeout": T}              wait until the hook sent or replayed everything
    {"cmd": "counters"}                         the hook's counters
    {"cmd": "exit"}
"""

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sentry_sdk  # noqa: E402

from support.sentry_memory import MemoryTransport  # noqa: E402
from tasks import hook  # noqa: E402

hook_ns = []
seen_ids = []
_original_before_send = hook.before_send


def timed_before_send(event, hint):
    """The hook's before_send, timed, recording the id of each event it is handed."""
    seen_ids.append(event.get("event_id"))
    started = time.perf_counter_ns()
    try:
        return _original_before_send(event, hint)
    finally:
        hook_ns.append(time.perf_counter_ns() - started)


# chain() calls the module's before_send by name, so this wraps the chained one too.
hook.before_send = timed_before_send


def raising_before_send(event, hint):
    raise RuntimeError("the app's own before_send failed")


def summary(values: list) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {"median": 0, "p95": 0, "max": 0}
    return {
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
        "max": ordered[-1],
    }


def burst(count: int, label: str) -> dict:
    hook_ns.clear()
    seen_ids.clear()
    capture_ns, event_ids = [], []
    for number in range(count):
        try:
            # Distinct types per ten events give the workers several fingerprints.
            raise type(f"FaultError{number % 10}", (Exception,), {})(f"{label} error {number}")
        except Exception:
            started = time.perf_counter_ns()
            event_id = sentry_sdk.capture_exception()
            capture_ns.append(time.perf_counter_ns() - started)
        if event_id:
            event_ids.append(event_id)
    return {"event_ids": event_ids, "seen_ids": list(seen_ids), "capture_ns": summary(capture_ns), "hook_ns": summary(list(hook_ns)),
            "hook_calls": len(hook_ns)}


def drain(timeout: float) -> dict:
    producer = hook.get_producer()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if producer.flush(0.1) and not producer._backlog and not producer.spool.pending():
            return {"drained": True, "counters": hook.hook_counters()}
        time.sleep(0.1)
    return {"drained": False, "counters": hook.hook_counters()}


def main(mode: str) -> None:
    # The chain puts the hook first and the app's callback second, as the Integration does.
    user_callback = raising_before_send if mode == "raising" else None
    sentry_sdk.init(
        dsn="http://public@127.0.0.1:1/1",
        transport=MemoryTransport,
        integrations=[hook.ErrortriageIntegration()],
        before_send=user_callback,
    )
    for line in sys.stdin:
        command = json.loads(line)
        name = command["cmd"]
        if name == "burst":
            answer = burst(command["count"], command.get("label", "burst"))
        elif name == "drain":
            answer = drain(command.get("timeout", 30))
        elif name == "counters":
            answer = {"counters": hook.hook_counters(), "sentry_events": len(MemoryTransport.events)}
        elif name == "exit":
            print(json.dumps({"bye": True}), flush=True)
            return
        else:
            answer = {"error": f"unknown command {name}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "plain")
