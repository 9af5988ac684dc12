"""The producer side, running inside the instrumented app: `before_send` and the Integration.

On the request thread the hook only extracts a bounded copy of what
classification needs and puts it on an in-memory queue without waiting. A
daemon thread scrubs the copy and publishes it with `send_task` by name, so the
app never imports worker code and never waits on the broker.

    import sentry_sdk
    from tasks.hook import ErrortriageIntegration
    sentry_sdk.init(dsn=..., integrations=[ErrortriageIntegration()])
"""

import atexit
import collections
import logging
import os
import queue
import threading
import time
from typing import Callable, Optional

from celery import Celery
from sentry_sdk.integrations import Integration

from classifier.context import extract_context
from config import ConfigError, Settings, load_settings
from config.celeryconfig import INGEST_TASK, producer_config
from tasks.payload import build_payload

logger = logging.getLogger(__name__)

PUBLISH_ATTEMPTS = 3
FLUSH_TIMEOUT_SECONDS = 2.0

_STOP = object()


class Producer:
    """A bounded queue and the daemon thread that publishes what is put on it."""

    def __init__(self, settings: Settings, source: str = "hook"):
        if not settings.redis_url:
            raise ConfigError("REDIS_URL is not set; set it to the broker the workers use, e.g. redis://127.0.0.1:6379/0")
        self.settings = settings
        self.source = source
        self.counters = collections.Counter()
        self._queue: queue.Queue = queue.Queue(maxsize=settings.hook_queue_size)
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._celery = Celery("errortriage-producer", set_as_current=False)
        self._celery.conf.update(producer_config(settings))

    def submit(self, context: dict) -> bool:
        """Queue a context for publishing without blocking; return False when the queue is full."""
        self._ensure_thread()
        try:
            self._queue.put_nowait(context)
        except queue.Full:
            self.counters["dropped_queue_full"] += 1
            return False
        self.counters["queued"] += 1
        return True

    def publish(self, context: dict) -> str:
        """Scrub, bound and publish one context now, from the calling thread; return the event id."""
        payload = build_payload(context, self.settings.max_context_bytes, self.source)
        self._celery.send_task(INGEST_TASK, args=[payload], queue=self.settings.bulk_queue, retry=False)
        return payload["event_id"]

    def flush(self, timeout: float = FLUSH_TIMEOUT_SECONDS) -> bool:
        """Wait until the queue is empty or `timeout` passes; return True if it emptied."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return self._queue.unfinished_tasks == 0

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                # After fork the parent's queue and thread are not ours: start empty.
                self._queue = queue.Queue(maxsize=self.settings.hook_queue_size)
                self._pid = os.getpid()
                self._thread = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="errortriage-producer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            context = self._queue.get()
            try:
                if context is _STOP:
                    return
                self._publish_with_retry(context)
            finally:
                self._queue.task_done()

    def _publish_with_retry(self, context: dict) -> None:
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                self.publish(context)
                self.counters["sent"] += 1
                return
            except Exception as error:  # the broker's failures come as many types
                last_error = error
                time.sleep(0.2 * attempt)
        self.counters["dropped_broker_down"] += 1
        _log_limited("publish failed", "dropped event after %d attempts: %s", PUBLISH_ATTEMPTS, last_error)


_last_logged: dict = {}


def _log_limited(key: str, message: str, *args) -> None:
    """Log a warning at most once a minute per key, so a broker outage does not flood the app's log."""
    now = time.monotonic()
    if now - _last_logged.get(key, -60.0) >= 60.0:
        _last_logged[key] = now
        logger.warning(message, *args)


_producer: Optional[Producer] = None
_producer_failed = False
_producer_lock = threading.Lock()


def get_producer() -> Optional[Producer]:
    """Return the process's producer, built from the settings on first use; None if misconfigured."""
    global _producer, _producer_failed
    if _producer is not None or _producer_failed:
        return _producer
    with _producer_lock:
        if _producer is None and not _producer_failed:
            try:
                _producer = Producer(load_settings())
                atexit.register(_producer.flush)
            except ConfigError as error:
                _producer_failed = True
                logger.error("errortriage hook disabled: %s", error)
    return _producer


def configure(settings: Settings) -> Producer:
    """Replace the process's producer with one built from `settings`."""
    global _producer, _producer_failed
    with _producer_lock:
        _producer = Producer(settings)
        _producer_failed = False
        atexit.register(_producer.flush)
    return _producer


def hook_counters() -> dict:
    """Return the hook's counters by reason (queued, sent, dropped_..., hook_errors)."""
    counts = dict(_producer.counters) if _producer else {}
    counts["hook_errors"] = _hook_errors
    return counts


_hook_errors = 0


def before_send(event, hint):
    """Queue the event for triage and return it unchanged. Never raises."""
    global _hook_errors
    try:
        if isinstance(event, dict) and event.get("type") != "transaction":
            producer = get_producer()
            if producer is not None:
                producer.submit(extract_context(event))
    except Exception:  # the host app must never see our failure
        _hook_errors += 1
        _log_limited("hook error", "errortriage hook failed on an event; the event still goes to Sentry")
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


class ErrortriageIntegration(Integration):
    """A sentry-sdk Integration that installs the hook and keeps any before_send already set."""

    identifier = "errortriage"

    def __init__(self, settings: Optional[Settings] = None):
        self.settings = settings

    @staticmethod
    def setup_once() -> None:
        pass

    def setup_once_with_options(self, options=None) -> None:
        # NOTE: sentry-sdk calls this once per process, so a second
        # sentry_sdk.init() in the same process keeps the first chain.
        if self.settings is not None:
            configure(self.settings)
        if options is not None:
            options["before_send"] = chain(options.get("before_send"))
