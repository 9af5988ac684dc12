"""Deliver triage results where on-call engineers look: Slack, PagerDuty and the Sentry issue.

Two tasks on the notify queue, so a slow webhook never holds up classification:

- `errortriage.notify` (event_id, stage) posts to Slack and triggers PagerDuty;
- `errortriage.sentry_writeback` (event_id, stage) sets the Sentry issue's
  priority and comments the classification on it.

`stage` is "classified" or "analysed". Every (channel, event, stage) has one
row in notify_deliveries, so a redelivered task never sends twice. Each
(channel, fingerprint, stage) has a cool-down window in notify_windows: the
first event opens it and is sent, later ones inside it are counted, and the
next message reports how many were folded in. Each channel is off until its
settings are present.
"""

import logging
import os
from typing import Callable, Optional

import requests
from celery.exceptions import Retry

from config.errors import ErrortriageError
from config.celeryconfig import MAX_RETRY_COUNTDOWN_SECONDS, NOTIFY_TASK, SENTRY_WRITEBACK_TASK, backoff_seconds
from config.settings import SEVERITIES, Settings, mask_secret, mask_url
from tasks.app import app, settings
from tasks.sentry_api import SentryAPI, SentryAPIError, issue_priority
from tasks.store import QUERIES, Store, StoreError, store_for

logger = logging.getLogger(__name__)

STAGES = ("classified", "analysed")

SLACK = "slack"
PAGERDUTY = "pagerduty"
SENTRY_COMMENT = "sentry_comment"
SENTRY_PRIORITY = "sentry_priority"

# Attempts of one delivery before it is marked failed.
MAX_ATTEMPTS = 8
# How long the write-back keeps asking Sentry for an event it has not ingested yet.
SENTRY_LOOKUP_MAX_SECONDS = 900.0
# A window that never closes: comments and priorities go out once per fingerprint.
ONCE_SECONDS = 100 * 365 * 24 * 3600.0
# Task retries cover every channel's attempts plus Postgres outages.
TASK_MAX_RETRIES = 60

CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 10.0
PAGERDUTY_SUMMARY_CHARS = 1024
PAGERDUTY_DEDUP_KEY_CHARS = 255
SLACK_FIELD_CHARS = 600

PAGERDUTY_SEVERITY = {"P0_CRITICAL": "critical", "P1_HIGH": "error", "P2_MEDIUM": "warning", "P3_LOW": "info"}
# Statuses where resending the same request cannot succeed.
PERMANENT_STATUSES = {400, 401, 403, 404, 405, 410, 413, 422}


class DeliveryError(ErrortriageError):
    """A send failed; `permanent` errors are not retried, others wait `retry_after` or a backoff."""

    def __init__(self, message: str, permanent: bool = False, retry_after: Optional[float] = None,
                 release: bool = False, status: Optional[int] = None):
        super().__init__(message)
        self.status = status
        self.permanent = permanent
        self.retry_after = retry_after
        # True: a later event of the fingerprint may try again (the failure belongs to this event).
        self.release = release


_session: Optional[requests.Session] = None
_session_pid: Optional[int] = None
_sentry: Optional[SentryAPI] = None
# Channels whose permanent error was logged already, and the comment switch a 403 turns off.
_logged_permanent: set = set()
_comments_disabled = False


def get_store() -> Store:
    return store_for(settings.database_url)


def _http() -> requests.Session:
    global _session, _session_pid
    # A session inherited through fork shares its sockets with the parent.
    if _session is None or _session_pid != os.getpid():
        _session = requests.Session()
        _session_pid = os.getpid()
    return _session


def get_sentry() -> Optional[SentryAPI]:
    """Return the process's Sentry client, or None when the write-back is not configured."""
    global _sentry
    if not sentry_configured(settings):
        return None
    if _sentry is None:
        _sentry = SentryAPI(settings.sentry_base_url, settings.sentry_api_token,
                            settings.sentry_org, settings.sentry_project)
    return _sentry


# ---------------------------------------------------------------- configuration


def slack_configured(config: Settings) -> bool:
    return bool(config.slack_webhook_url)


def pagerduty_configured(config: Settings) -> bool:
    return bool(config.pagerduty_routing_key and config.pagerduty_events_url)


def sentry_configured(config: Settings) -> bool:
    return bool(config.sentry_api_token and config.sentry_org and config.sentry_project)


def at_or_above(severity: Optional[str], threshold: str) -> bool:
    """True when `severity` is as severe as `threshold` or more (P0 is the most severe)."""
    if severity not in SEVERITIES:
        return False
    return SEVERITIES.index(severity) <= SEVERITIES.index(threshold)


def enqueue_notifications(event_id: str, stage: str, *, config: Optional[Settings] = None, celery_app=None) -> None:
    """Queue the notify and Sentry write-back tasks of one stored event; a no-op when no channel is configured.

    Call it after the classification (stage "classified") or the deep analysis
    (stage "analysed") was saved. It never raises. When the broker does not
    take a task, the task goes to the notify_outbox table and the beat sweep
    queues it later (see requeue_outbox).
    """
    config = config or settings
    celery_app = celery_app or app
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    names = []
    if slack_configured(config) or pagerduty_configured(config):
        names.append(NOTIFY_TASK)
    if sentry_configured(config):
        names.append(SENTRY_WRITEBACK_TASK)
    for position, name in enumerate(names):
        try:
            celery_app.send_task(name, args=[event_id, stage], queue=config.notify_queue)
        except Exception as error:  # kombu raises many types when the broker is unreachable
            logger.warning("could not queue notifications, keeping them in notify_outbox: event_id=%s stage=%s "
                           "error=%s: %s", event_id, stage, type(error).__name__, error)
            _keep_in_outbox(config, event_id, stage, names[position:])
            return


def _keep_in_outbox(config: Settings, event_id: str, stage: str, names: list) -> None:
    try:
        store = store_for(config.database_url)
        for name in names:
            store.execute("notify_outbox_add", event_id=event_id, stage=stage, task=name)
    except ErrortriageError as error:
        logger.error("notifications lost: neither the broker nor Postgres took them: event_id=%s stage=%s "
                     "tasks=%s error=%s", event_id, stage, ",".join(names), error)


def requeue_outbox(*, config: Optional[Settings] = None, celery_app=None, limit: int = 500) -> int:
    """Queue the tasks kept in notify_outbox, oldest first; return how many were queued.

    A task leaves the table only once the broker took it, and the first failed
    publish ends the pass. A task queued twice does no harm, since the notify
    and write-back tasks skip a delivery that is already recorded.
    """
    config = config or settings
    celery_app = celery_app or app
    store = store_for(config.database_url)
    queued = 0
    for row in store.fetchall("notify_outbox_oldest", limit=limit):
        try:
            celery_app.send_task(row["task"], args=[row["event_id"], row["stage"]], queue=config.notify_queue)
        except Exception as error:
            logger.warning("broker still unavailable, notify_outbox kept: event_id=%s error=%s: %s",
                           row["event_id"], type(error).__name__, error)
            break
        store.execute("notify_outbox_remove", **row)
        queued += 1
    if queued:
        logger.info("queued %d notification tasks from notify_outbox", queued)
    return queued


# ---------------------------------------------------------------- messages


def _clip(text: Optional[str], limit: int) -> Optional[str]:
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _slack_escape(text: str) -> str:
    # Slack reads &, < and > as markup; everything else is plain text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(event: dict, stage: str, folded_before: int, issue_url: Optional[str] = None) -> dict:
    """Return the incoming-webhook body for one event."""
    context = event.get("context") or {}
    heading = f"*{'Root cause analysed' if stage == 'analysed' else 'New error'}: {event['severity']} {event['category']}*"
    if context.get("environment"):
        heading += f" in {_slack_escape(context['environment'])}"
    if context.get("release"):
        heading += f" (release {_slack_escape(context['release'])})"
    lines = [
        heading,
        f"> {_slack_escape(_clip(event.get('summary') or '(no summary)', SLACK_FIELD_CHARS))}",
    ]
    if event.get("root_cause"):
        lines.append(f"*Root cause:* {_slack_escape(_clip(event['root_cause'], SLACK_FIELD_CHARS))}")
    if event.get("recommended_action"):
        lines.append(f"*Recommended action:* {_slack_escape(_clip(event['recommended_action'], SLACK_FIELD_CHARS))}")
    count = f"Events with this fingerprint: {event.get('event_count') or 1}"
    if folded_before:
        count += f"; {folded_before} repeat{'s' if folded_before != 1 else ''} folded in since the last message"
    lines.append(count)
    if issue_url:
        lines.append(f"<{issue_url}|Open the Sentry issue>")
    lines.append(f"event `{event['event_id']}` fingerprint `{event['fingerprint'][:16]}`")
    return {"text": "\n".join(lines)}


def pagerduty_dedup_key(fingerprint: str) -> str:
    return f"errortriage-{fingerprint}"[:PAGERDUTY_DEDUP_KEY_CHARS]


def pagerduty_event(event: dict, stage: str, routing_key: str, folded_before: int,
                    issue_url: Optional[str] = None) -> dict:
    """Return the Events API v2 trigger for one event."""
    context = event.get("context") or {}
    summary = f"[{event['severity']}] {event['category']}: {event.get('summary') or '(no summary)'}"
    details = {
        "category": event["category"],
        "severity": event["severity"],
        "summary": event.get("summary"),
        "root_cause": event.get("root_cause"),
        "recommended_action": event.get("recommended_action"),
        "classifier": event.get("classifier"),
        "stage": stage,
        "event_id": event["event_id"],
        "fingerprint": event["fingerprint"],
        "event_count": event.get("event_count"),
        "folded_repeats": folded_before,
        "environment": context.get("environment"),
        "release": context.get("release"),
        "sentry_issue": issue_url,
    }
    body = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": pagerduty_dedup_key(event["fingerprint"]),
        "payload": {
            "summary": _clip(summary, PAGERDUTY_SUMMARY_CHARS),
            "source": _clip(context.get("environment") or context.get("release") or "errortriage", 255),
            "severity": PAGERDUTY_SEVERITY[event["severity"]],
            "class": event["category"],
            "custom_details": {key: value for key, value in details.items() if value is not None},
        },
        "client": "errortriage",
    }
    if issue_url:
        body["client_url"] = issue_url
        body["links"] = [{"href": issue_url, "text": "Sentry issue"}]
    return body


def sentry_comment(event: dict, stage: str) -> str:
    """Return the comment text for the Sentry issue."""
    lines = [
        f"errortriage: {event['category']}, {event['severity']} (by {event.get('classifier') or 'unknown'})",
        f"Summary: {event.get('summary') or '(none)'}",
    ]
    if event.get("root_cause"):
        lines.append(f"Root cause: {event['root_cause']}")
    if event.get("recommended_action"):
        lines.append(f"Recommended action: {event['recommended_action']}")
    if stage == "analysed" and not event.get("root_cause"):
        lines.append("Deep analysis found no root cause.")
    return "\n".join(lines)


# ---------------------------------------------------------------- senders


def _retry_after(response: requests.Response) -> Optional[float]:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _post_json(url: str, body: dict, channel: str, ok_statuses: tuple) -> requests.Response:
    try:
        response = _http().post(url, json=body, timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS))
    except requests.RequestException as error:
        # The exception text repeats the URL, which contains the Slack secret, so keep only the type.
        raise DeliveryError(f"{channel}: {type(error).__name__}") from None
    if response.status_code in ok_statuses:
        return response
    detail = (response.text or "").strip().replace("\n", " ")[:200]
    status = response.status_code
    if status == 429:
        raise DeliveryError(f"{channel}: HTTP 429 {detail}".strip(), retry_after=_retry_after(response), status=429)
    raise DeliveryError(f"{channel}: HTTP {status} {detail}".strip(), permanent=status in PERMANENT_STATUSES,
                        status=status)


def send_slack(webhook_url: str, message: dict) -> None:
    _post_json(webhook_url, message, SLACK, (200,))


def send_pagerduty(events_url: str, body: dict) -> None:
    _post_json(events_url, body, PAGERDUTY, (200, 201, 202))


# ---------------------------------------------------------------- the delivery engine


def _retry_on_store_error(task, step: str, event_id: str, error: StoreError):
    countdown = backoff_seconds(task.request.retries)
    logger.warning("store unavailable, retrying %s: event_id=%s error=%s", step, event_id, error)
    return task.retry(exc=error, countdown=countdown, max_retries=TASK_MAX_RETRIES)


def _log_permanent(channel: str, error: Exception, target: str) -> None:
    """Log a channel's permanent error once per process: a broken webhook must not flood the log."""
    key = (channel, getattr(error, "status", None))
    if key in _logged_permanent:
        logger.debug("%s permanent error again: %s", channel, error)
        return
    _logged_permanent.add(key)
    logger.error("%s delivery failed permanently, not retrying: %s (target %s)", channel, error, target)


def deliver(store: Store, channel: str, event: dict, stage: str, cooldown: float,
            send: Callable[[int, dict], None], target: str, release_on_permanent: bool = False,
            max_attempts: int = MAX_ATTEMPTS) -> Optional[float]:
    """Run one channel's delivery of one event and stage; return seconds until a retry is due, or None.

    `send(folded_before, row)` performs the call and raises DeliveryError on failure; `row` is the
    delivery row as claimed (attempts, age_seconds).
    """
    keys = dict(channel=channel, event_id=event["event_id"], stage=stage, fingerprint=event["fingerprint"])
    row = store.fetchone("notify_claim_delivery", **keys)
    if row["status"] in ("sent", "folded", "failed"):
        return None
    if row["status"] == "pending":
        with store.cursor() as cursor:
            # One transaction: the window decision and the delivery's new status stand or fall together.
            cursor.execute(QUERIES["notify_open_window"], dict(keys, cooldown=cooldown))
            opened = cursor.fetchone()
            if opened is None:
                cursor.execute(QUERIES["notify_mark_folded"], {"id": row["id"]})
                if cursor.fetchone() is not None:
                    cursor.execute(QUERIES["notify_fold_into_window"], keys)
                    logger.info("%s folded: event_id=%s stage=%s", channel, event["event_id"], stage)
                return None
            cursor.execute(QUERIES["notify_mark_sending"], {"id": row["id"], "folded_before": opened["carried"]})
            if cursor.fetchone() is None:
                return None
        folded_before = opened["carried"]
    else:
        folded_before = row["folded_before"]
        if row["wait_seconds"] and row["wait_seconds"] > 0:
            return row["wait_seconds"]

    try:
        send(folded_before, row)
    except DeliveryError as error:
        return _after_failure(store, row, keys, error, target, release_on_permanent, max_attempts)
    store.execute("notify_mark_sent", id=row["id"])
    logger.info("%s sent: event_id=%s stage=%s folded_before=%d", channel, event["event_id"], stage, folded_before)
    return None


def _after_failure(store, row, keys, error: DeliveryError, target, release_on_permanent, max_attempts):
    channel = keys["channel"]
    attempts = row["attempts"] + 1
    if error.permanent:
        store.execute("notify_mark_failed", id=row["id"], error=str(error))
        _log_permanent(channel, error, target)
        if release_on_permanent or error.release:
            store.execute("notify_release_window", **keys)
        return None
    if attempts >= max_attempts:
        store.execute("notify_mark_failed", id=row["id"], error=f"gave up after {attempts} attempts: {error}")
        store.execute("notify_release_window", **keys)
        logger.error("%s gave up after %d attempts: event_id=%s error=%s (target %s)",
                     channel, attempts, keys["event_id"], error, target)
        return None
    delay = error.retry_after if error.retry_after is not None else backoff_seconds(row["attempts"])
    delay = min(max(delay, 0.5), MAX_RETRY_COUNTDOWN_SECONDS)
    store.execute("notify_mark_retry", id=row["id"], error=str(error), delay=delay)
    logger.warning("%s retry in %.1fs: event_id=%s attempt=%d error=%s",
                   channel, delay, keys["event_id"], attempts, error)
    return delay


def _load_event(store: Store, event_id: str, stage: str) -> Optional[dict]:
    if stage not in STAGES:
        logger.error("notify: unknown stage %r for event_id=%s; expected one of %s", stage, event_id, STAGES)
        return None
    event = store.fetchone("notify_event", event_id=event_id)
    if event is None or event["classified_at"] is None:
        logger.warning("notify skipped: event_id=%s is not stored or not classified", event_id)
        return None
    return event


def _known_issue_url(store: Store, event_id: str) -> Optional[str]:
    """The Sentry issue link when the write-back found it, or one quick lookup now; never waits."""
    client = get_sentry()
    if client is None:
        return None
    row = store.fetchone("sentry_issue_of_event", event_id=event_id)
    if row:
        return client.issue_url(row["issue_id"])
    try:
        issue_id = client.find_issue(event_id)
    except SentryAPIError as error:
        logger.info("no Sentry link for event_id=%s: %s", event_id, error)
        return None
    if issue_id is None:
        return None
    store.execute("sentry_save_issue", event_id=event_id, issue_id=issue_id)
    return client.issue_url(issue_id)


def _retry_task(task, delays: list) -> None:
    pending = [delay for delay in delays if delay is not None]
    if pending:
        countdown = min(max(min(pending), 0.5), MAX_RETRY_COUNTDOWN_SECONDS)
        raise task.retry(countdown=countdown, max_retries=TASK_MAX_RETRIES)


@app.task(name=NOTIFY_TASK, bind=True, max_retries=TASK_MAX_RETRIES)
def notify(self, event_id, stage):
    """Post one classified or analysed event to Slack and PagerDuty, each within its threshold."""
    try:
        store = get_store()
        event = _load_event(store, event_id, stage)
        if event is None:
            return "skipped"
        if stage == "analysed" and not event.get("root_cause"):
            return "no-analysis"
        slack_due = slack_configured(settings) and at_or_above(event["severity"], settings.slack_min_severity)
        pagerduty_due = pagerduty_configured(settings) and at_or_above(event["severity"], settings.pagerduty_min_severity)
        if not (slack_due or pagerduty_due):
            return "below-threshold"
        links = {}

        def issue_url() -> Optional[str]:
            # Looked up only when a message is actually sent, at most once per task run.
            if "url" not in links:
                links["url"] = _known_issue_url(store, event_id)
            return links["url"]

        delays = []
        if slack_due:
            delays.append(deliver(
                store, SLACK, event, stage, settings.notify_cooldown_seconds,
                lambda folded, row: send_slack(
                    settings.slack_webhook_url, slack_message(event, stage, folded, issue_url()),
                ),
                target=f"SLACK_WEBHOOK_URL={mask_secret(settings.slack_webhook_url)}",
            ))
        if pagerduty_due:
            delays.append(deliver(
                store, PAGERDUTY, event, stage, settings.notify_cooldown_seconds,
                lambda folded, row: send_pagerduty(
                    settings.pagerduty_events_url,
                    pagerduty_event(event, stage, settings.pagerduty_routing_key, folded, issue_url()),
                ),
                target=f"PAGERDUTY_EVENTS_URL={mask_url(settings.pagerduty_events_url)} "
                       f"PAGERDUTY_ROUTING_KEY={mask_secret(settings.pagerduty_routing_key)}",
            ))
        _retry_task(self, delays)
        return "done"
    except Retry:
        raise
    except StoreError as error:
        raise _retry_on_store_error(self, "notify", event_id, error)


# ---------------------------------------------------------------- Sentry write-back


def _issue_for(store: Store, client: SentryAPI, event_id: str, age_seconds: float, attempts: int) -> str:
    """Return the event's issue id; raise a retryable DeliveryError while Sentry has not ingested it."""
    row = store.fetchone("sentry_issue_of_event", event_id=event_id)
    if row:
        return row["issue_id"]
    try:
        issue_id = client.find_issue(event_id)
    except SentryAPIError as error:
        raise DeliveryError(str(error), permanent=error.permanent, retry_after=error.retry_after, release=True,
                            status=error.status) from None
    if issue_id is None:
        if age_seconds >= SENTRY_LOOKUP_MAX_SECONDS:
            raise DeliveryError(f"event lookup: Sentry has no event {event_id} after {age_seconds:.0f}s",
                                permanent=True, release=True)
        # Sentry usually ingests within seconds: start short, double up to a minute.
        raise DeliveryError("event lookup: not ingested yet (404)",
                            retry_after=min(60.0, backoff_seconds(attempts, base=1.0)))
    store.execute("sentry_save_issue", event_id=event_id, issue_id=issue_id)
    return issue_id


def _sentry_call(call: Callable[[], None]) -> None:
    try:
        call()
    except SentryAPIError as error:
        raise DeliveryError(str(error), permanent=error.permanent, retry_after=error.retry_after,
                            release=True, status=error.status) from None


@app.task(name=SENTRY_WRITEBACK_TASK, bind=True, max_retries=TASK_MAX_RETRIES)
def sentry_writeback(self, event_id, stage):
    """Set the priority of the event's Sentry issue and comment the classification, once per fingerprint."""
    try:
        client = get_sentry()
        if client is None:
            return "not-configured"
        store = get_store()
        event = _load_event(store, event_id, stage)
        if event is None:
            return "skipped"
        target = f"SENTRY_BASE_URL={mask_url(settings.sentry_base_url)} SENTRY_API_TOKEN={mask_secret(settings.sentry_api_token)}"
        max_attempts = int(SENTRY_LOOKUP_MAX_SECONDS // 30) + MAX_ATTEMPTS
        delays = []

        def with_issue(action):
            # The delivery row knows its age: the lookup gives up after SENTRY_LOOKUP_MAX_SECONDS.
            def send(folded_before, row):
                action(_issue_for(store, client, event_id, row["age_seconds"], row["attempts"]))
            return send

        if settings.sentry_set_priority and stage == "classified":
            def set_priority(issue_id):
                _sentry_call(lambda: client.set_priority(issue_id, issue_priority(event["severity"])))
            delays.append(deliver(store, SENTRY_PRIORITY, event, stage, ONCE_SECONDS, with_issue(set_priority),
                                  target=target, max_attempts=max_attempts))

        if not _comments_disabled and not (stage == "analysed" and not event.get("root_cause")):
            def comment(issue_id):
                global _comments_disabled
                try:
                    client.add_comment(issue_id, sentry_comment(event, stage))
                except SentryAPIError as error:
                    if error.status == 403:
                        _comments_disabled = True
                        logger.error("Sentry refused the comment (HTTP 403): comments need a token that acts "
                                     "for a user; comments are off until the worker restarts (%s)", target)
                    raise DeliveryError(str(error), permanent=error.permanent, retry_after=error.retry_after,
                                        release=True, status=error.status) from None
            delays.append(deliver(store, SENTRY_COMMENT, event, stage, ONCE_SECONDS, with_issue(comment),
                                  target=target, max_attempts=max_attempts))
        _retry_task(self, delays)
        return "done"
    except Retry:
        raise
    except StoreError as error:
        raise _retry_on_store_error(self, "Sentry write-back", event_id, error)


# ---------------------------------------------------------------- notify-test


def send_test_message(channel: str, config: Settings) -> str:
    """Send a test message to one channel now; return what was sent. Raises DeliveryError or ValueError."""
    sample = {
        "event_id": "0" * 32,
        "fingerprint": "notify-test",
        "category": "EXTERNAL_API",
        "severity": "P3_LOW",
        "summary": "errortriage test message: if you read this, notifications reach this channel.",
        "classifier": "notify-test",
        "event_count": 1,
        "context": {"environment": "notify-test", "release": None},
    }
    if channel == SLACK:
        if not slack_configured(config):
            raise ValueError("SLACK_WEBHOOK_URL is not set; set it to the incoming webhook URL of your channel")
        send_slack(config.slack_webhook_url, slack_message(sample, "classified", 0))
        return f"Slack test message sent to {mask_secret(config.slack_webhook_url)}"
    if channel == PAGERDUTY:
        if not pagerduty_configured(config):
            raise ValueError("PAGERDUTY_ROUTING_KEY is not set; set it to the integration key of an Events API v2 integration")
        send_pagerduty(config.pagerduty_events_url,
                       pagerduty_event(sample, "classified", config.pagerduty_routing_key, 0))
        return (f"PagerDuty test trigger (severity info, dedup_key {pagerduty_dedup_key('notify-test')}) sent to "
                f"{mask_url(config.pagerduty_events_url)}; resolve the alert it opened")
    raise ValueError(f"unknown channel {channel!r}; use slack or pagerduty")
