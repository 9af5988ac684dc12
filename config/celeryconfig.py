"""Celery settings of the workers and of the hook's producer, built from Settings.

Task names are fixed strings so that an instrumented app can publish with
`send_task` by name and never import worker code.
"""

import random

from config.settings import Settings

INGEST_TASK = "errortriage.ingest_event"
DEEP_TASK = "errortriage.analyse_event"
SWEEP_TASK = "errortriage.sweep_stale"
NOTIFY_TASK = "errortriage.notify"
SENTRY_WRITEBACK_TASK = "errortriage.sentry_writeback"


# Hard and soft time limits of one task run, far below the visibility timeout.
TASK_SOFT_TIME_LIMIT_SECONDS = 120
TASK_TIME_LIMIT_SECONDS = 150

# Upper bound of any retry countdown a task schedules for itself.
MAX_RETRY_COUNTDOWN_SECONDS = 300

def backoff_seconds(retries: int, base: float = 2.0) -> float:
    """Return a retry countdown: exponential in `retries`, with jitter over its upper half, capped."""
    ceiling = min(MAX_RETRY_COUNTDOWN_SECONDS, base * (2 ** min(retries, 16)))
    return random.uniform(ceiling / 2, ceiling)


# Redis re-delivers a message that was taken but not acked after the visibility
# timeout (VISIBILITY_TIMEOUT_SECONDS). It must exceed the longest task run plus
# the longest retry countdown, because a retry is an ETA message the worker keeps
# unacked; otherwise a healthy but slow task would be delivered twice.
MIN_VISIBILITY_TIMEOUT_SECONDS = TASK_TIME_LIMIT_SECONDS + MAX_RETRY_COUNTDOWN_SECONDS


def broker_transport_options(settings: Settings, socket_timeout: float) -> dict:
    """Return the kombu Redis transport options of workers and the hook."""
    return {
        "visibility_timeout": max(settings.visibility_timeout_seconds, MIN_VISIBILITY_TIMEOUT_SECONDS),
        # kombu looks for messages of dead workers every interval x throttle
        # seconds (100 s by default); 30 s keeps recovery close to the timeout.
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 3,
        # kombu passes no socket timeout by default, so a Redis that accepts the
        # connection but never replies would hang the caller forever.
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": settings.broker_socket_timeout_seconds,
        "retry_on_timeout": False,
    }


def worker_config(settings: Settings) -> dict:
    """Return the Celery configuration of worker and beat processes."""
    return {
        "broker_url": settings.redis_url,
        # A worker waits out a Redis stall shorter than this socket timeout
        # instead of dropping its connection: a connection dropped while its
        # BRPOP is unanswered loses the message Redis pops for it on resuming.
        "broker_transport_options": broker_transport_options(settings, settings.worker_broker_socket_timeout_seconds),
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        # Results live in Postgres; a result backend would only add Redis keys.
        "task_ignore_result": True,
        "task_routes": {
            INGEST_TASK: {"queue": settings.bulk_queue},
            DEEP_TASK: {"queue": settings.deep_queue},
            SWEEP_TASK: {"queue": settings.bulk_queue},
            NOTIFY_TASK: {"queue": settings.notify_queue},
            SENTRY_WRITEBACK_TASK: {"queue": settings.notify_queue},
        },
        "task_default_queue": settings.bulk_queue,
        # Ack after the task body ran, so a worker that dies mid-task leaves the
        # message in Redis for another worker. Tasks are idempotent on event_id,
        # which makes the second delivery harmless.
        "task_acks_late": True,
        # A child process killed by the OOM killer or SIGKILL counts as a lost
        # worker: requeue its message instead of acking it as failed.
        "task_reject_on_worker_lost": True,
        # With late acks every prefetched message is held by this worker until
        # it finishes the one before; one at a time keeps a slow LLM call from
        # stranding events that an idle worker could take.
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": TASK_SOFT_TIME_LIMIT_SECONDS,
        "task_time_limit": TASK_TIME_LIMIT_SECONDS,
        # Publishing the deep task from inside a worker may wait a little for a
        # Redis blip; the message is only acked once the publish returned.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 3,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 2.0,
        },
        # Flower reads task events; without them it shows workers but no tasks.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "beat_schedule": {
            "sweep-stale-events": {
                "task": SWEEP_TASK,
                "schedule": settings.sweep_interval_seconds,
                "options": {"queue": settings.bulk_queue, "expires": settings.sweep_interval_seconds},
            },
        },
    }


def producer_config(settings: Settings) -> dict:
    """Return the Celery configuration of the hook's producer inside a user's app."""
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": False,
        "broker_connection_max_retries": 0,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        # The hook's thread publishes one event at a time; a long publish retry
        # would only grow its queue. A failed publish is reported to the caller.
        "task_publish_retry": False,
        # One short connect attempt: kombu would otherwise retry a refused
        # connect for broker_connection_timeout seconds, and the hook has the
        # spool for that.
        "broker_connection_timeout": settings.broker_socket_timeout_seconds,
        "broker_transport_options": dict(
            broker_transport_options(settings, settings.broker_socket_timeout_seconds), max_retries=0
        ),
    }
