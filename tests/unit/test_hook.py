"""The hook in one process, with a scripted broker: hand-off, spool, replay, bounds, guards, fork, exit."""

import json
import logging
import os
import subprocess
import sys
import threading

import pytest
import sentry_sdk
from celery import Celery

from config import load_settings
from support.helpers import wait_for
from support.sentry_memory import MemoryTransport
from tasks import hook
from tasks.spool import Spool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeBroker:
    """A stand-in for Redis: up (keeps payloads), down (refuses) or frozen (hangs, then times out)."""

    def __init__(self):
        self.state = "up"
        self.sent = []
        self.thawed = threading.Event()
        self.hang_seconds = 0.5
        self.lock = threading.Lock()

    def send(self, payload):
        if self.state == "down":
            raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
        if self.state == "frozen":
            # Like a socket timeout: hang for a while, then fail, unless thawed first.
            if not self.thawed.wait(self.hang_seconds):
                raise TimeoutError("Timeout reading from 127.0.0.1:1")
        with self.lock:
            self.sent.append(payload)

    def ids(self):
        with self.lock:
            return [payload["event_id"] for payload in self.sent]


def event(number, **extra):
    return dict({
        "event_id": f"{number:032x}",
        "level": "error",
        "exception": {"values": [{"type": "KeyError", "value": f"'sku{number}'", "module": None}]},
    }, **extra)


@pytest.fixture
def broker():
    fake = FakeBroker()
    yield fake
    fake.state = "up"
    fake.thawed.set()


@pytest.fixture
def make_producer(tmp_path, broker):
    """Install a producer that talks to the fake broker and spools under tmp_path."""

    def make(spool=None, **variables):
        environ = {"REDIS_URL": "redis://127.0.0.1:1/0", "SPOOL_DIR": str(tmp_path / "spool")}
        environ.update({key: str(value) for key, value in variables.items()})
        return hook.configure(load_settings(environ), send=broker.send, spool=spool)

    yield make
    hook._producer = None


def delivered(producer):
    counts = producer.counters.snapshot()
    return counts["sent"] + counts["replayed"]


def test_returns_the_same_object_for_anything():
    things = [event(1), {}, {"type": "transaction"}, None, [], "text", 42]
    for thing in things:
        assert hook.before_send(thing, {}) is thing


def test_event_is_published_from_the_thread(make_producer, broker):
    producer = make_producer()

    assert hook.before_send(event(1), {}) is not None
    assert producer.flush(5)

    assert broker.ids() == [f"{1:032x}"]
    counts = hook.hook_counters()
    assert counts["queued"] == 1
    assert counts["sent"] == 1
    assert counts["spooled"] == 0
    assert counts["hook_errors"] == 0


def test_broker_down_spools_then_replays_in_order(make_producer, broker):
    producer = make_producer()
    broker.state = "down"

    for number in range(20):
        hook.before_send(event(number), {})
    wait_for(lambda: producer.counters["spooled"] == 20, timeout=10, message="20 spooled")
    assert broker.ids() == []
    assert len(producer.spool.pending()) == 20

    broker.state = "up"
    wait_for(lambda: producer.counters["replayed"] == 20, timeout=10, message="20 replayed")
    assert broker.ids() == [f"{number:032x}" for number in range(20)]
    assert producer.spool.pending() == []

    # With the backlog gone, new events go straight to the broker again.
    hook.before_send(event(99), {})
    wait_for(lambda: producer.counters["sent"] == 1, timeout=10, message="direct send")
    assert hook.hook_counters()["hook_errors"] == 0


def test_frozen_broker_never_holds_the_request_thread(make_producer, broker):
    producer = make_producer(HOOK_QUEUE_SIZE=100)
    broker.state = "frozen"
    broker.hang_seconds = 3600

    for number in range(200):
        hook.before_send(event(number), {})
    # Every call above returned while the broker still hangs: nothing waited on it.
    assert not broker.thawed.is_set()
    counts = producer.counters.snapshot()
    assert counts["queued"] + counts["overflowed"] == 200
    assert counts["overflowed"] > 0
    assert counts["dropped_queue_full"] == 0

    broker.state = "up"
    broker.thawed.set()
    wait_for(lambda: len(set(broker.ids())) == 200, timeout=20, message="all 200 delivered")
    assert sorted(set(broker.ids())) == [f"{number:032x}" for number in range(200)]


class SlowSpool(Spool):
    """A spool whose writes wait for a signal, to fill the overflow queue too."""

    def __init__(self, *args, gate, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = gate

    def write(self, payload):
        self.gate.wait()
        return super().write(payload)


def test_both_queues_full_drops_and_counts(make_producer, broker, tmp_path):
    gate = threading.Event()
    producer = make_producer(spool=SlowSpool(tmp_path / "slow", 10_000_000, gate=gate), HOOK_QUEUE_SIZE=1)
    broker.state = "frozen"

    accepted = [producer.submit({"exceptions": [], "event_id": f"{number:032x}"}) for number in range(10)]

    counts = producer.counters.snapshot()
    assert accepted.count(False) == counts["dropped_queue_full"] >= 1
    assert counts["queued"] + counts["overflowed"] + counts["dropped_queue_full"] == 10
    gate.set()


def test_spool_full_drops_newest_and_counts(make_producer, broker):
    producer = make_producer(SPOOL_MAX_BYTES=1500)
    broker.state = "down"

    for number in range(20):
        hook.before_send(event(number), {})
    wait_for(lambda: producer.counters["spooled"] + producer.counters["dropped_spool_full"] == 20,
             timeout=10, message="every event spooled or dropped")

    counts = producer.counters.snapshot()
    assert counts["dropped_spool_full"] >= 1
    kept = sorted(json.loads(path.read_text())["event_id"] for path in producer.spool.pending())
    assert kept == [f"{number:032x}" for number in range(counts["spooled"])]


def test_oversize_event_is_cut_not_refused(make_producer, broker):
    producer = make_producer(MAX_CONTEXT_BYTES=700)
    big = event(1, tags={f"tag{index}": "v" * 150 for index in range(30)})
    big["exception"]["values"] = [
        {"type": f"Error{index}", "value": "x" * 2000, "stacktrace": {"frames": [
            {"module": "shop.views", "function": "f" * 200, "filename": "p" * 200, "lineno": line}
            for line in range(10)]}}
        for index in range(5)
    ]

    hook.before_send(big, {})
    assert producer.flush(5)

    [payload] = broker.sent
    assert len(json.dumps(payload["context"], default=str)) <= 700
    assert payload["context"]["truncated"] is True
    assert payload["context"]["exceptions"][-1]["type"] == "Error4"
    assert producer.counters["truncated"] == 1


def test_too_small_limit_drops_and_counts(make_producer, broker):
    producer = make_producer(MAX_CONTEXT_BYTES=40)

    hook.before_send(event(1), {})
    assert producer.flush(5)

    assert broker.sent == []
    assert producer.counters["dropped_too_large"] == 1


def test_unencodable_text_is_repaired(make_producer, broker):
    producer = make_producer()
    odd = event(1)
    odd["exception"]["values"][0]["value"] = "bad \udcff surrogate"

    hook.before_send(odd, {})
    assert producer.flush(5)

    [payload] = broker.sent
    json.dumps(payload, ensure_ascii=False).encode("utf-8")
    assert "surrogate" in payload["context"]["exceptions"][0]["value"]


def test_failure_inside_the_hook_is_counted_not_raised(make_producer, monkeypatch):
    make_producer()

    def broken(event):
        raise RuntimeError("extraction bug")

    monkeypatch.setattr(hook, "extract_context", broken)
    before = hook.hook_counters()["hook_errors"]
    thing = event(1)

    assert hook.before_send(thing, {}) is thing
    assert hook.hook_counters()["hook_errors"] == before + 1


@pytest.fixture
def sentry(make_producer):
    """The real sentry-sdk, with the logging integration, delivering into memory."""
    MemoryTransport.take()
    sentry_sdk.init(dsn="http://public@127.0.0.1:1/1", transport=MemoryTransport, before_send=hook.before_send,
                    default_integrations=True)
    hook._install_guards()
    yield MemoryTransport
    sentry_sdk.init()
    MemoryTransport.take()


def test_hook_logging_makes_no_event(sentry, make_producer, monkeypatch):
    producer = make_producer()
    real_submit = producer.submit

    def noisy_submit(context):
        logging.getLogger("tasks.hook").error("hook trouble while an event is handled")
        logging.getLogger("tasks.spool").error("spool trouble while an event is handled")
        logging.getLogger("shop.library").error("a library logs while the hook runs")
        return real_submit(context)

    monkeypatch.setattr(producer, "submit", noisy_submit)
    try:
        raise KeyError("sku")
    except KeyError:
        sentry_sdk.capture_exception()
    sentry_sdk.flush(2)
    assert producer.flush(5)

    events = sentry.take()
    # The app's exception and the library's record reach Sentry; our own records do not.
    assert sorted(event.get("logger") or "exception" for event in events) == ["exception", "shop.library"]
    # Only the app's exception reached the triage queue: the record logged inside the hook did not.
    assert producer.counters["queued"] == 1


def test_broker_client_loggers_never_become_events(sentry, make_producer):
    for name in ("kombu.connection", "celery.app.trace", "celery", "tasks.hook", "tasks.spool"):
        logging.getLogger(name).error("connection lost")
    logging.getLogger("shop").error("a real app error")
    sentry_sdk.flush(2)

    assert [event.get("logger") for event in sentry.take()] == ["shop"]


def test_own_worker_events_not_queued(make_producer):
    producer = make_producer()
    app = Celery("guard-test", set_as_current=False)
    seen = {}

    @app.task(name="errortriage.ingest_event")
    def ours():
        seen["ours"] = hook.before_send(event(1), {})

    @app.task(name="shop.tasks.charge")
    def theirs():
        seen["theirs"] = hook.before_send(event(2), {})

    ours()
    theirs()
    hook.before_send(event(3, logger="tasks.triage"), {})
    hook.before_send(event(4, extra={"celery-job": {"task_name": "errortriage.analyse_event"}}), {})
    worker_thread = threading.Thread(target=hook.before_send, args=(event(5), {}), name="errortriage-publisher")
    worker_thread.start()
    worker_thread.join()
    assert producer.flush(5)

    assert seen["ours"]["event_id"] == f"{1:032x}"
    assert producer.counters["queued"] == 1  # only the user's task


def test_fork_child_starts_empty(make_producer, broker):
    producer = make_producer()
    broker.state = "frozen"
    for number in range(3):
        hook.before_send(event(number), {})
    wait_for(lambda: producer._inflight, timeout=5, message="publisher busy with the frozen broker")

    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its queue and what it sent, then exit at once
        try:
            mine = []
            producer._send_override = mine.append
            report = {"queued_after_fork": producer._queue.qsize(), "counters": producer.counters.snapshot()}
            hook.before_send(event(100), {})
            producer.flush(5)
            report["sent"] = [payload["event_id"] for payload in mine]
            os.write(writer, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        report = json.loads(pipe.read() or "{}")
    os.waitpid(pid, 0)

    assert report["queued_after_fork"] == 0
    assert report["counters"]["queued"] == 0
    assert report["sent"] == [f"{100:032x}"]


EXIT_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from config import load_settings
from tasks import hook
mode = sys.argv[1]
def hang(payload):
    time.sleep(3600)
def keep(payload):
    with open({sent!r}, "a") as out:
        out.write(payload["event_id"] + "\\n")
settings = load_settings({{"REDIS_URL": "redis://127.0.0.1:1/0", "SPOOL_DIR": {spool!r}}})
hook.configure(settings, send=hang if mode == "hang" else keep)
for number in range(30):
    hook.before_send({{"event_id": "%032x" % number, "exception": {{"values": [{{"type": "E"}}]}}}}, {{}})
"""


@pytest.mark.parametrize("mode", ["hang", "up"])
def test_exit_flushes_or_spools_every_queued_event(tmp_path, mode):
    spool_dir, sent = tmp_path / "spool", tmp_path / "sent.txt"
    script = tmp_path / "app.py"
    script.write_text(EXIT_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests"), spool=str(spool_dir),
                                         sent=str(sent)))

    result = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    spooled = {json.loads(path.read_text())["event_id"] for path in Spool(spool_dir, 1).pending()}
    published = set(sent.read_text().split()) if sent.exists() else set()
    assert spooled | published == {f"{number:032x}" for number in range(30)}
    if mode == "up":
        assert len(published) == 30


def test_counters_logged_at_most_once_a_minute(make_producer, caplog):
    producer = make_producer()
    producer.counters.add("spooled", 3)
    producer._last_counter_log -= hook.COUNTER_LOG_INTERVAL_SECONDS + 1

    with caplog.at_level(logging.INFO, logger="tasks.hook"):
        producer._maybe_log_counters()
        producer.counters.add("spooled")
        producer._maybe_log_counters()

    records = [record for record in caplog.records if "counters" in record.getMessage()]
    assert len(records) == 1
    assert "spooled=3" in records[0].getMessage()


def test_counters_name_every_reason():
    counts = hook.hook_counters()
    for name in ("sent", "spooled", "replayed", "dropped_spool_full", "dropped_too_large", "hook_errors"):
        assert counts[name] >= 0


def test_chained_user_callback_runs_after_ours(make_producer, broker):
    producer = make_producer()

    def user(event, hint):
        raise RuntimeError("the app's own before_send failed")

    chained = hook.chain(user)
    with pytest.raises(RuntimeError):
        chained(event(1), {})
    assert producer.flush(5)
    assert broker.ids() == [f"{1:032x}"]
    assert hook.chain(chained) is chained
    assert hook.chain(None) is hook.before_send


def test_readme_names_the_spool_settings():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert "SPOOL_DIR" in readme
    assert "SPOOL_MAX_BYTES" in readme
    assert "replay-spool" in readme
    assert "fsync" in readme
