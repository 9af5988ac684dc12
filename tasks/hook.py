"""The producer side, running inside the instrumented app: `before_send` and the Integration.

On the request thread the hook only extracts a bounded copy of what
classification needs and puts it on an in-memory queue without waiting. A
daemon thread scrubs the copy, cuts it to MAX_CONTEXT_BYTES and publishes it
as the task message `send_task` would send for the task name, so the app
never imports worker code and never waits on the broker. When the broker does not answer, events go to a spool
on disk (tasks/spool.py) and the same thread replays them, oldest first, once
the broker answers again; `errortriage replay-spool` does the same by hand.

    import sentry_sdk
    from tasks.hook import ErrortriageIntegration
    sentry_sdk.init(dsn=..., integrations=[ErrortriageIntegration()])
"""

import atexit
import json
import logging
import os
import queue
import sys
import threading
import time
import uuid
import weakref
from typing import Callable, Optional

from sentry_sdk.integrations import Integration

from classifier.context import extract_context
from config import ConfigError, Settings, load_settings
from config.celeryconfig import INGEST_TASK, producer_config
from tasks.payload import build_payload
from tasks.preliminary_tags import add_preliminary_tags
from tasks.spool import PermanentSendError, ReplayResult, Spool

logger = logging.getLogger(__name__)

FLUSH_TIMEOUT_SECONDS = 2.0
# While the broker is down, try it again (by replaying the oldest spooled
# event) at most this often.
PROBE_INTERVAL_SECONDS = 1.0
# Spooled events sent per replay pass before the thread looks at its queue again.
REPLAY_BATCH = 100
COUNTER_LOG_INTERVAL_SECONDS = 60.0
# Events the publisher takes from its queue at once and sends over one producer.
PUBLISH_BATCH = 50
# After each event the hook's threads sleep this long. A request thread that
# waits for the GIL then gets it at once, not after the 5 ms switch interval.
YIELD_SECONDS = 0.0001
THREAD_PREFIX = "errortriage-"

COUNTER_NAMES = (
    "queued",               # taken on the request thread
    "overflowed",           # the queue was full: handed to the spooling thread instead
    "sent",                 # published straight to the broker
    "spooled",              # written to the spool because the broker was down or behind
    "replayed",             # published from the spool
    "truncated",            # cut to MAX_CONTEXT_BYTES (still sent)
    "dropped_spool_full",   # spool at SPOOL_MAX_BYTES: the new event was dropped
    "dropped_spool_error",  # the spool folder could not be written
    "dropped_too_large",    # even the minimal form exceeds MAX_CONTEXT_BYTES
    "dropped_queue_full",   # queue and overflow queue both full
    "dropped_corrupt",      # a spooled file did not parse or can never be sent (kept as .bad)
    "hook_errors",          # a failure inside the hook; the event still went to Sentry
)
_LOSSES = tuple(name for name in COUNTER_NAMES if name.startswith("dropped_")) + ("hook_errors",)

# Records of these loggers never become Sentry events or breadcrumbs: the hook
# logs while Sentry is handling an event, and Celery and kombu log from the
# very publish the hook makes, so either could feed the hook its own output.
IGNORED_LOGGERS = ("tasks.hook", "tasks.spool", "celery", "celery.*", "kombu", "kombu.*")

# Loggers of errortriage's own modules: an event logged by one of them was
# raised by our worker side, and sending it to the workers could loop.
OWN_LOGGERS = frozenset({
    "tasks.hook", "tasks.spool", "tasks.triage", "tasks.store", "tasks.app", "tasks.payload",
    "tasks.processes", "tasks.cli", "classifier.llm", "classifier.rules", "classifier.context",
    "classifier.scrub", "classifier.fingerprint", "classifier.prompts", "classifier.schema",
})
OWN_TASK_PREFIX = "errortriage."

class Counters:
    """Thread-safe counters by reason."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values = dict.fromkeys(COUNTER_NAMES, 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + amount

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._values)

    def __getitem__(self, name: str) -> int:
        return self.snapshot().get(name, 0)


def _is_permanent(error: BaseException) -> bool:
    """True for errors no retry will fix (the payload cannot be encoded); the rest are the broker's."""
    from kombu.exceptions import ContentDisallowed, EncodeError

    return isinstance(error, (EncodeError, ContentDisallowed, TypeError, ValueError))


def _utf8_safe(value):
    """Return `value` with strings that cannot be encoded as UTF-8 (lone surrogates) repaired."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_utf8_safe(key): _utf8_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_utf8_safe(item) for item in value]
    return value


def _yield_gil() -> None:
    time.sleep(YIELD_SECONDS)


def _json_size(value) -> int:
    return len(json.dumps(value, default=str))


def _skeleton(context: dict) -> dict:
    """Return the smallest useful form of a context: the last exception's type, module, short value and frame."""
    keep = ("event_id", "platform", "level", "logger", "release", "environment", "request")
    skeleton = {key: context[key] for key in keep if context.get(key) is not None}
    exceptions = context.get("exceptions") or []
    if exceptions:
        last = exceptions[-1]
        value = last.get("value")
        skeleton["exceptions"] = [{
            "type": last.get("type"),
            "module": last.get("module"),
            "value": value[:61] + "..." if isinstance(value, str) and len(value) > 64 else value,
            "mechanism": last.get("mechanism"),
            "handled": last.get("handled"),
            "frames": (last.get("frames") or [])[-1:],
        }]
    else:
        skeleton["exceptions"] = []
    skeleton["truncated"] = True
    return skeleton


class Producer:
    """The in-memory queues, the spool and the daemon threads that publish what is put on them.

    Three daemon threads share the work. `errortriage-publisher` takes the
    main queue and publishes each event. It spools the event instead while the
    broker is down or older events wait in the spool, which keeps their order.
    `errortriage-spooler` writes to the spool what the request thread put on
    the overflow queue because the main queue was full. `errortriage-replayer`
    replays the spool and is the only thread that probes a failed broker, so a
    frozen broker holds up no thread that takes events.
    """

    def __init__(self, settings: Settings, source: str = "hook", send: Optional[Callable] = None,
                 spool: Optional[Spool] = None):
        if not settings.redis_url and send is None:
            raise ConfigError("REDIS_URL is not set; set it to the broker the workers use, e.g. redis://127.0.0.1:6379/0")
        self.settings = settings
        self.source = source
        self.spool = spool if spool is not None else Spool(settings.spool_dir, settings.spool_max_bytes)
        self._send_override = send
        self._init_process_state()
        _PRODUCERS.add(self)

    def _init_process_state(self) -> None:
        """Everything that belongs to one process and must be fresh after fork()."""
        self.counters = Counters()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=self.settings.hook_queue_size)
        self._overflow: queue.Queue = queue.Queue(maxsize=self.settings.hook_queue_size)
        self._threads: list = []
        self._celery = None
        self._closed = False
        self._broker_up = True
        self._backlog = False
        self._spool_generation = 0
        self._retry_at = 0.0
        self._wake = threading.Event()
        self._inflight: dict = {}
        self._last_counter_log = time.monotonic()
        self._logged_counts: Optional[dict] = None

    def _after_fork(self) -> None:
        # The parent's queues, threads, locks and broker sockets are not ours:
        # start empty, so the child never resends what the parent had queued.
        self.spool.after_fork()
        self._init_process_state()

    # -- the request thread ----------------------------------------------

    def submit(self, context: dict) -> bool:
        """Queue a context without blocking; return False only when it had to be dropped."""
        if self._closed:
            # Interpreter exit: no thread will take it any more, so spool it here.
            return self._spool_context(context)
        self._ensure_threads()
        try:
            self._queue.put_nowait(context)
            self.counters.add("queued")
            return True
        except queue.Full:
            pass
        try:
            self._overflow.put_nowait(context)
            self.counters.add("overflowed")
            return True
        except queue.Full:
            self.counters.add("dropped_queue_full")
            _log_limited("queue full", "errortriage hook queues are full; dropping events (they still go to Sentry)")
            return False

    def _ensure_threads(self) -> None:
        if self._threads and self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._after_fork()  # fork() without the at-fork handler, e.g. from a C extension
            if not self._threads:
                publisher = threading.Thread(target=self._run_publisher, name=THREAD_PREFIX + "publisher", daemon=True)
                spooler = threading.Thread(target=self._run_spooler, name=THREAD_PREFIX + "spooler", daemon=True)
                replayer = threading.Thread(target=self._run_replayer, name=THREAD_PREFIX + "replayer", daemon=True)
                self._threads = [publisher, spooler, replayer]
                for thread in self._threads:
                    thread.start()

    # -- publishing, from any thread ---------------------------------------

    def publish(self, context: dict) -> str:
        """Scrub, bound and publish one context now, from the calling thread; return the event id.

        Raises what the broker raises; used by `errortriage ingest` and tests.
        """
        payload = self.build(context)
        if payload is None:
            raise ValueError(f"context does not fit MAX_CONTEXT_BYTES={self.settings.max_context_bytes} even when cut")
        self._send(payload)
        return payload["event_id"]

    def build(self, context: dict) -> Optional[dict]:
        """Return the payload of a context, cut to MAX_CONTEXT_BYTES; None if even the minimal form is larger."""
        payload = _utf8_safe(build_payload(context, self.settings.max_context_bytes, self.source, scrub=self.settings.scrub_store))
        limit = self.settings.max_context_bytes
        if _json_size(payload["context"]) > limit:
            payload["context"] = _skeleton(payload["context"])
            if _json_size(payload["context"]) > limit:
                self.counters.add("dropped_too_large")
                _log_limited("too large", "event dropped: even its minimal form exceeds MAX_CONTEXT_BYTES=%d", limit)
                return None
        if payload["context"].get("truncated"):
            self.counters.add("truncated")
        return payload

    def _send(self, payload: dict, session: Optional["_ProducerSession"] = None) -> None:
        """Publish one payload, over the producer `session` keeps across events when given."""
        if self._send_override is not None:
            self._send_override(payload)
            return
        if session is None:
            with _ProducerSession(self) as once:
                once.send(payload)
        else:
            session.send(payload)

    def _send_for_replay(self, payload: dict, session: Optional["_ProducerSession"] = None) -> None:
        try:
            self._send(payload, session)
        except Exception as error:  # sorted below: the payload's fault or the broker's
            if _is_permanent(error):
                raise PermanentSendError(f"{type(error).__name__}: {error}") from error
            raise

    def _replay_one(self, payload: dict, session: "_ProducerSession") -> None:
        self._send_for_replay(payload, session)
        _yield_gil()

    def _get_celery(self):
        if self._celery is None:
            from celery import Celery

            app = Celery("errortriage-producer", set_as_current=False)
            app.conf.update(producer_config(self.settings))
            self._celery = app
        return self._celery

    # -- the publisher thread ---------------------------------------------

    def _run_publisher(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < PUBLISH_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            taken = len(batch)
            # What is left of the batch, in order, so close() can spool it.
            self._inflight["publisher"] = batch
            try:
                self._handle_batch(batch)
            except Exception:
                self._count_error("publisher failed on a batch")
            finally:
                self._inflight.pop("publisher", None)
                for _ in range(taken):
                    self._queue.task_done()

    def _handle_batch(self, batch: list) -> None:
        """Handle the events of `batch` in order, removing each once handled; one producer serves them all."""
        with _ProducerSession(self) as session:
            while batch:
                try:
                    self._handle(batch[0], session)
                except Exception:
                    self._count_error("publisher failed on an event")
                if batch:  # close() may have emptied it to spool the rest itself
                    del batch[0]
                _yield_gil()

    def _handle(self, context: dict, session: Optional["_ProducerSession"] = None) -> None:
        payload = self.build(context)
        if payload is None:
            return
        if self._should_spool():
            self._spool(payload)
            return
        _yield_gil()
        try:
            self._send(payload, session)
        except Exception as error:  # the broker's failures come as many types
            if _is_permanent(error):
                self._count_error("event cannot be encoded for the broker")
                return
            self._broker_failed(error)
            self._spool(payload)
            return
        self._broker_up = True
        self.counters.add("sent")

    def _should_spool(self) -> bool:
        # While older events wait in the spool, new ones queue up behind them to keep the order.
        if self._closed or self._backlog:
            return True
        return not self._broker_up and time.monotonic() < self._retry_at

    def _broker_failed(self, error: BaseException) -> None:
        self._broker_up = False
        self._retry_at = time.monotonic() + PROBE_INTERVAL_SECONDS
        _log_limited("broker down", "broker unreachable, spooling events to %s: %s", self.spool.directory,
                     type(error).__name__)

    # -- the replaying thread ---------------------------------------------

    def _run_replayer(self) -> None:
        # Probing the broker happens here, never on the publisher thread, so a
        # frozen broker holds up only this thread while the others spool.
        try:
            # Events left by an earlier run or another process go out first.
            if self.spool.pending():
                self._mark_backlog()
        except Exception:
            self._count_error("spool listing failed")
        while True:
            try:
                now = time.monotonic()
                if self._backlog and now >= self._retry_at:
                    self._replay_pass()
                    continue
                wait = max(0.5, self._last_counter_log + COUNTER_LOG_INTERVAL_SECONDS - now)
                if self._backlog:
                    wait = min(wait, max(0.01, self._retry_at - now))
                self._wake.wait(wait)
                self._wake.clear()
                self._maybe_log_counters()
            except Exception:
                self._count_error("replay failed")
                self._retry_at = time.monotonic() + PROBE_INTERVAL_SECONDS
                time.sleep(0.1)

    def _replay_pass(self) -> None:
        with self._state_lock:
            generation = self._spool_generation
        with _ProducerSession(self) as session:
            result = self.spool.replay(lambda payload: self._replay_one(payload, session), limit=REPLAY_BATCH)
        if result.sent:
            self.counters.add("replayed", result.sent)
        if result.quarantined:
            self.counters.add("dropped_corrupt", result.quarantined)
        if result.error is not None:
            self._broker_failed(result.error)
            return
        if result.busy:
            # Another thread or process is replaying, so look again later.
            self._retry_at = time.monotonic() + PROBE_INTERVAL_SECONDS
            return
        self._broker_up = True
        if result.empty:
            with self._state_lock:
                # Only if the spooling thread wrote nothing since the pass began.
                if generation == self._spool_generation:
                    self._backlog = False

    # -- the spooling thread ----------------------------------------------

    def _run_spooler(self) -> None:
        while True:
            context = self._overflow.get()
            self._inflight["spooler"] = [context]
            try:
                self._spool_context(context)
            except Exception:
                self._count_error("spooler failed on an event")
            finally:
                _yield_gil()
                self._inflight.pop("spooler", None)
                self._overflow.task_done()

    # -- the spool ---------------------------------------------------------

    def _spool_context(self, context: dict) -> bool:
        payload = self.build(context)
        return payload is not None and self._spool(payload)

    def _spool(self, payload: dict) -> bool:
        try:
            written = self.spool.write(payload)
        except OSError as error:
            self.counters.add("dropped_spool_error")
            _log_limited("spool error", "cannot write the spool %s, event dropped: %s", self.spool.directory, error)
            return False
        if not written:
            self.counters.add("dropped_spool_full")
            _log_limited("spool full", "spool %s is full (SPOOL_MAX_BYTES=%d); dropping new events",
                         self.spool.directory, self.spool.max_bytes)
            return False
        self.counters.add("spooled")
        self._mark_backlog()
        return True

    def _mark_backlog(self) -> None:
        with self._state_lock:
            self._spool_generation += 1
            self._backlog = True
        self._wake.set()

    # -- flush, exit, counters ----------------------------------------------

    def flush(self, timeout: float = FLUSH_TIMEOUT_SECONDS) -> bool:
        """Wait until both queues are handled or `timeout` passes; return True if they were."""
        deadline = time.monotonic() + timeout
        while True:
            if self._queue.unfinished_tasks == 0 and self._overflow.unfinished_tasks == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def close(self, timeout: float = FLUSH_TIMEOUT_SECONDS) -> int:
        """Flush within `timeout`, then spool whatever is left; return the number spooled here."""
        if self._pid != os.getpid() or not self._threads:
            self._closed = True
            return 0
        flushed = self.flush(timeout)
        self._closed = True
        if flushed:
            return 0
        leftovers = []
        for waiting in (self._queue, self._overflow):
            while True:
                try:
                    context = waiting.get_nowait()
                except queue.Empty:
                    break
                waiting.task_done()
                leftovers.append(context)
        # A thread may be between taking an item and marking it in flight: give it a moment.
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline and (
                (self._queue.unfinished_tasks and "publisher" not in self._inflight)
                or (self._overflow.unfinished_tasks and "spooler" not in self._inflight)):
            time.sleep(0.01)
        # Events still in flight (a publish hanging on a frozen broker, the
        # rest of the publisher's batch) are spooled here. Emptying the lists
        # stops the threads from handling them too; the one being published
        # right now may still arrive, and the workers store it once.
        for name in ("publisher", "spooler"):
            items = self._inflight.get(name)
            if items:
                leftovers.extend(list(items))
                items.clear()
        spooled = sum(1 for context in leftovers if self._spool_context(context))
        if leftovers:
            logger.warning("errortriage hook exiting: spooled %d of %d unsent events", spooled, len(leftovers))
        return spooled

    def _maybe_log_counters(self) -> None:
        now = time.monotonic()
        if now - self._last_counter_log < COUNTER_LOG_INTERVAL_SECONDS:
            return
        self._last_counter_log = now
        counts = self.counters.snapshot()
        if counts == self._logged_counts or not any(counts.values()):
            return
        self._logged_counts = counts
        level = logging.WARNING if any(counts[name] for name in _LOSSES) else logging.INFO
        logger.log(level, "errortriage hook counters: %s",
                   " ".join(f"{name}={value}" for name, value in counts.items() if value))

    def _count_error(self, description: str) -> None:
        self.counters.add("hook_errors")
        _log_limited(description, "errortriage hook: %s", description, exc_info=True)


class _ProducerSession:
    """One kombu producer from the Celery app's pool, held across the events of a batch.

    The producer is taken on the first send, inside that send, so a broker
    that refuses the connection fails the send like any other broker error.
    After a failed send the producer goes back to the pool and the next send
    takes one again, as send_task would for each event.
    """

    def __init__(self, owner: "Producer"):
        self._owner = owner
        self._acquired = None
        self._producer = None

    def __enter__(self) -> "_ProducerSession":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        acquired, self._acquired, self._producer = self._acquired, None, None
        if acquired is not None:
            acquired.__exit__(None, None, None)

    def send(self, payload: dict) -> None:
        app = self._owner._get_celery()
        try:
            if self._producer is None:
                acquired = app.producer_or_acquire()
                self._producer = acquired.__enter__()
                self._acquired = acquired
            producer = self._producer
            # As send_task does: the broker client's errors come out as kombu's.
            with producer.connection._reraise_as_library_errors():
                # The same task message send_task builds, without its per-call
                # routing and registry work. argsrepr is set so Celery skips a
                # repr of the whole payload for the message headers.
                amqp = app.amqp
                message = amqp.create_task_message(
                    str(uuid.uuid4()), INGEST_TASK, [payload], {}, ignore_result=True,
                    argsrepr=f"[<event {payload.get('event_id')}>]", kwargsrepr="{}",
                )
                amqp.send_task_message(producer, INGEST_TASK, message, queue=self._owner.settings.bulk_queue,
                                       retry=False)
        except BaseException:
            self.release()
            raise


_last_logged: dict = {}


def _log_limited(key: str, message: str, *args, exc_info=False) -> None:
    """Log a warning at most once a minute per key, so a broker outage does not flood the app's log."""
    now = time.monotonic()
    if now - _last_logged.get(key, -60.0) >= 60.0:
        _last_logged[key] = now
        logger.warning(message, *args, exc_info=exc_info)


_PRODUCERS: "weakref.WeakSet[Producer]" = weakref.WeakSet()
_producer: Optional[Producer] = None
_producer_failed = False
_producer_lock = threading.Lock()
_module_counters = Counters()
_local = threading.local()
_guards_installed = False


def _install_guards() -> None:
    """Keep our own and the broker client's log records out of Sentry, once per process."""
    global _guards_installed
    if _guards_installed:
        return
    from sentry_sdk.integrations.logging import ignore_logger

    for name in IGNORED_LOGGERS:
        ignore_logger(name)
    _guards_installed = True


def get_producer() -> Optional[Producer]:
    """Return the process's producer, built from the settings on first use; None if misconfigured."""
    global _producer, _producer_failed
    if _producer is not None or _producer_failed:
        return _producer
    with _producer_lock:
        if _producer is None and not _producer_failed:
            _install_guards()
            try:
                _producer = Producer(load_settings())
            except ConfigError as error:
                _producer_failed = True
                logger.error("errortriage hook disabled: %s", error)
    return _producer


def configure(settings: Settings, **options) -> Producer:
    """Replace the process's producer with one built from `settings` (options go to Producer)."""
    global _producer, _producer_failed
    _install_guards()
    with _producer_lock:
        _producer = Producer(settings, **options)
        _producer_failed = False
    return _producer


def hook_counters() -> dict:
    """Return the hook's counters by reason: sent, spooled, replayed, dropped_*, hook_errors, ..."""
    counts = dict.fromkeys(COUNTER_NAMES, 0)
    producer = _producer
    if producer is not None:
        counts.update(producer.counters.snapshot())
    counts["hook_errors"] += _module_counters["hook_errors"]
    return counts


def _close_all() -> None:
    for producer in list(_PRODUCERS):
        try:
            producer.close()
        except Exception:
            logger.warning("errortriage hook: closing a producer at exit failed", exc_info=True)


def _after_fork_in_child() -> None:
    global _producer_lock, _module_counters, _local
    _producer_lock = threading.Lock()
    _module_counters = Counters()
    _local = threading.local()
    for producer in list(_PRODUCERS):
        producer._after_fork()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _inside_own_task() -> bool:
    """True inside one of errortriage's Celery tasks (a worker that also runs sentry-sdk)."""
    state = sys.modules.get("celery._state")
    task = state.get_current_task() if state is not None else None
    name = getattr(task, "name", None)
    return isinstance(name, str) and name.startswith(OWN_TASK_PREFIX)


def _from_own_code(event: dict) -> bool:
    """True for an event our own modules or tasks produced, e.g. an error logged by a worker."""
    logger_name = event.get("logger")
    if isinstance(logger_name, str) and logger_name in OWN_LOGGERS:
        return True
    extra = event.get("extra")
    job = extra.get("celery-job") if isinstance(extra, dict) else None
    task_name = job.get("task_name") if isinstance(job, dict) else None
    return isinstance(task_name, str) and task_name.startswith(OWN_TASK_PREFIX)


def _should_queue(event) -> bool:
    if not isinstance(event, dict) or event.get("type") == "transaction":
        return False
    if threading.current_thread().name.startswith(THREAD_PREFIX):
        return False
    return not _inside_own_task() and not _from_own_code(event)


def before_send(event, hint):
    """Queue the event for triage and return it unchanged. Never raises."""
    if getattr(_local, "active", False):
        # Re-entered from inside the hook (a log record or error raised while it ran).
        return event
    _local.active = True
    try:
        if _should_queue(event):
            context = extract_context(event)
            producer = get_producer()
            if producer is not None:
                producer.submit(context)
            # After the copy was taken, so the tags never feed back into triage.
            add_preliminary_tags(event, context)
    except Exception:  # the host app must never see our failure
        _module_counters.add("hook_errors")
        _log_limited("hook error", "errortriage hook failed on an event; the event still goes to Sentry")
    finally:
        _local.active = False
    return event


def chain(user_before_send: Optional[Callable]) -> Callable:
    """Return a before_send that queues the event, then runs the app's own before_send.

    Triage runs first, so an exception in the app's callback is still handled
    the way sentry-sdk documents (the event is dropped and logged by the SDK)
    while the error is already queued for triage.
    """
    if user_before_send is None or getattr(user_before_send, "_errortriage", False):
        return user_before_send or before_send

    def chained(event, hint):
        before_send(event, hint)
        return user_before_send(event, hint)

    chained._errortriage = True
    return chained


def replay_spool(settings: Settings, directory=None) -> tuple:
    """Replay a spool folder (default SPOOL_DIR) until it is empty or the broker fails.

    Returns (ReplayResult with the totals, number of files left).
    """
    spool = Spool(directory or settings.spool_dir, settings.spool_max_bytes)
    producer = Producer(settings, source="replay", spool=spool)
    total = ReplayResult()
    while True:
        result = spool.replay(producer._send_for_replay, limit=REPLAY_BATCH)
        total.sent += result.sent
        total.quarantined += result.quarantined
        total.error, total.busy, total.empty = result.error, result.busy, result.empty
        if result.error is not None or result.busy or result.empty or not (result.sent or result.quarantined):
            break
    return total, len(spool)


class ErrortriageIntegration(Integration):
    """A sentry-sdk Integration that installs the hook and keeps any before_send already set."""

    identifier = "errortriage"

    def __init__(self, settings: Optional[Settings] = None):
        self.settings = settings

    @staticmethod
    def setup_once() -> None:
        _install_guards()

    def setup_once_with_options(self, options=None) -> None:
        # NOTE: sentry-sdk calls this once per process, so a second
        # sentry_sdk.init() in the same process keeps the first chain.
        if self.settings is not None:
            configure(self.settings)
        if options is not None:
            options["before_send"] = chain(options.get("before_send"))
