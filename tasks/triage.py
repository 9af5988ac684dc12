"""The Celery tasks: store and classify on the bulk queue, analyse on the deep queue, sweep from beat.

Every task is idempotent on event_id: a message delivered twice (late acks,
a killed worker, a sweep) finds the row already stored or classified and
does nothing more.
"""

import json
import logging
import random
import time
from typing import Optional

from celery.exceptions import Retry

from classifier import rules
from classifier.errors import InvalidEventError, LLMError, LLMPermanentError, LLMRetryableError
from classifier.fingerprint import fingerprint, signature
from classifier.llm import LLMClient
from classifier.schema import Category, Classification, Severity
from classifier.scrub import scrub_value
from config.celeryconfig import DEEP_TASK, INGEST_TASK, MAX_RETRY_COUNTDOWN_SECONDS, SWEEP_TASK
from tasks.app import app, settings
from tasks.payload import PAYLOAD_VERSION, check_payload
from tasks.store import Store, StoreError

logger = logging.getLogger(__name__)

# Postgres or Redis trouble: retry with backoff for about an hour and a half
# (the countdown caps at MAX_RETRY_COUNTDOWN_SECONDS) before giving up.
STORE_MAX_RETRIES = 20
DEEP_MAX_RETRIES = 3
SWEEP_BATCH = 500

_store: Optional[Store] = None
_client: Optional[LLMClient] = None


def reset_process_state() -> None:
    """Forget the pool and HTTP session inherited through fork."""
    global _store, _client
    _store = None
    _client = None


def get_store() -> Store:
    global _store
    if _store is None:
        if not settings.database_url:
            raise StoreError("DATABASE_URL is not set; set it to postgresql://user@host:5432/dbname")
        _store = Store(settings.database_url)
    return _store


def get_client() -> LLMClient:
    global _client
    if _client is None:
        _client = LLMClient(
            settings.llm_base_url, settings.llm_api_key, settings.llm_timeout_seconds, settings.llm_max_tokens
        )
    return _client


def backoff_seconds(retries: int, base: float = 2.0) -> float:
    """Exponential backoff with full jitter, capped well below the visibility timeout."""
    ceiling = min(MAX_RETRY_COUNTDOWN_SECONDS, base * (2 ** retries))
    return random.uniform(ceiling / 2, ceiling)


def _record_call(event_id: str, tier: str, model: str, usage, started: float, outcome: str) -> None:
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.completion_tokens if usage else 0
    get_store().execute(
        "record_llm_call",
        event_id=event_id,
        tier=tier,
        model=model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=settings.cost_usd(model, prompt, completion),
        latency_ms=int((time.monotonic() - started) * 1000),
        outcome=outcome,
    )


def classify_with_llm(task, event_id: str, context: dict) -> Classification:
    """Classify with the bulk model; retry the task on a retryable error, fall back to rules on the rest."""
    model = settings.bulk_model
    started = time.monotonic()
    try:
        classification = get_client().classify(scrub_value(context), model)
    except LLMRetryableError as error:
        _record_call(event_id, "bulk", model, None, started, f"retryable: {error}")
        get_store().execute("record_attempt", event_id=event_id, error=str(error))
        if task.request.retries < settings.bulk_max_retries:
            countdown = error.retry_after_seconds or backoff_seconds(task.request.retries)
            countdown = min(countdown, MAX_RETRY_COUNTDOWN_SECONDS)
            logger.warning(
                "classify retry: event_id=%s attempt=%d countdown=%.1fs error=%s",
                event_id, task.request.retries + 1, countdown, error,
            )
            raise task.retry(countdown=countdown, max_retries=settings.bulk_max_retries)
        logger.error("classify gave up on provider: event_id=%s error=%s; using rules", event_id, error)
        return rules.classify(context, reason=f"provider failed {task.request.retries + 1} times: {error}")
    except LLMPermanentError as error:
        _record_call(event_id, "bulk", model, None, started, f"permanent: {error}")
        get_store().execute("record_attempt", event_id=event_id, error=str(error))
        logger.error("classify permanent provider error: event_id=%s error=%s; using rules", event_id, error)
        return rules.classify(context, reason=f"provider error: {error}")
    _record_call(event_id, "bulk", model, classification.usage, started, "ok")
    return classification


def classify_event(task, event_id: str, context: dict) -> Classification:
    """Choose the tier for one event and classify it."""
    if settings.use_fallback_classifier:
        return rules.classify(context, reason="USE_FALLBACK_CLASSIFIER=true")
    if not settings.llm_configured:
        return rules.classify(context, reason="no LLM configured")
    return classify_with_llm(task, event_id, context)


def wants_deep(classification: Classification, first_seen: bool) -> bool:
    """Deep analysis is for a new fingerprint that is urgent or not understood."""
    if not settings.use_llm or not first_seen:
        return False
    urgent = classification.severity in (Severity.P0_CRITICAL, Severity.P1_HIGH)
    unclear = classification.category in (Category.LOGIC_ERROR, Category.UNKNOWN)
    return urgent or unclear


def save_and_route(event_id: str, classification: Classification, first_seen: bool) -> None:
    """Store a classification once and queue deep analysis when it is wanted."""
    store = get_store()
    row = store.fetchone(
        "save_classification",
        event_id=event_id,
        category=classification.category.value,
        severity=classification.severity.value,
        summary=classification.summary,
        classifier=classification.classifier,
        note=classification.reason,
        prompt_tokens=classification.usage.prompt_tokens,
        completion_tokens=classification.usage.completion_tokens,
    )
    if row is None:
        logger.info("classification already stored: event_id=%s", event_id)
        return
    logger.info(
        "classified: event_id=%s category=%s severity=%s classifier=%s",
        event_id, classification.category.value, classification.severity.value, classification.classifier,
    )
    if wants_deep(classification, first_seen) and store.fetchone("claim_deep", event_id=event_id):
        app.send_task(DEEP_TASK, args=[event_id], queue=settings.deep_queue)


def _dead_letter(task_id: Optional[str], payload, error: Exception) -> None:
    try:
        raw = json.dumps(payload, default=repr)
    except (TypeError, ValueError, RecursionError):
        raw = repr(payload)
    get_store().execute("dead_letter", task_id=task_id, payload=raw[:1_000_000], error=str(error))
    logger.error("dead-lettered payload: task_id=%s error=%s", task_id, error)


@app.task(name=INGEST_TASK, bind=True, max_retries=STORE_MAX_RETRIES)
def ingest_event(self, payload):
    """Store an event from the hook, `errortriage ingest` or the sweep, then classify it."""
    event_id = payload.get("event_id") if isinstance(payload, dict) else None
    try:
        try:
            event_id, context = check_payload(payload)
        except InvalidEventError as error:
            _dead_letter(self.request.id, payload, error)
            return "dead-letter"

        store = get_store()
        event_fingerprint = fingerprint(context)
        new = store.insert_event(event_id, event_fingerprint, signature(context), context)
        if new:
            logger.info("stored: event_id=%s fingerprint=%s", event_id, event_fingerprint)
        if not settings.worker_enabled:
            return "stored"

        row = store.fetchone("get_event", event_id=event_id)
        if row["classified_at"] is not None:
            return "already-classified"
        first_seen = store.fingerprint_count(row["fingerprint"]) <= 1
        classification = classify_event(self, event_id, row["context"])
        save_and_route(event_id, classification, first_seen)
        return classification.category.value
    except Retry:
        raise
    except StoreError as error:
        countdown = backoff_seconds(self.request.retries)
        logger.warning(
            "store unavailable, retrying: event_id=%s attempt=%d countdown=%.1fs error=%s",
            event_id, self.request.retries + 1, countdown, error,
        )
        raise self.retry(exc=error, countdown=countdown)


@app.task(name=DEEP_TASK, bind=True, max_retries=STORE_MAX_RETRIES)
def analyse_event(self, event_id):
    """Ask the deep model for root cause and recommended action of one stored event."""
    try:
        store = get_store()
        row = store.fetchone("get_event", event_id=event_id)
        if row is None or row["deep_status"] != "queued":
            return "skipped"
        model = settings.deep_model
        started = time.monotonic()
        try:
            analysis = get_client().analyse(scrub_value(row["context"]), row, model)
        except LLMRetryableError as error:
            _record_call(event_id, "deep", model, None, started, f"retryable: {error}")
            if self.request.retries < DEEP_MAX_RETRIES:
                countdown = min(error.retry_after_seconds or backoff_seconds(self.request.retries), MAX_RETRY_COUNTDOWN_SECONDS)
                logger.warning("analyse retry: event_id=%s countdown=%.1fs error=%s", event_id, countdown, error)
                raise self.retry(countdown=countdown)
            return _save_deep_failure(event_id, error)
        except LLMError as error:
            _record_call(event_id, "deep", model, None, started, f"permanent: {error}")
            return _save_deep_failure(event_id, error)
        _record_call(event_id, "deep", model, analysis.usage, started, "ok")
        store.execute(
            "save_deep",
            event_id=event_id,
            root_cause=analysis.root_cause,
            recommended_action=analysis.recommended_action,
            classifier=analysis.classifier,
            status="done",
            prompt_tokens=analysis.usage.prompt_tokens,
            completion_tokens=analysis.usage.completion_tokens,
            error=None,
        )
        logger.info("analysed: event_id=%s model=%s", event_id, model)
        return "done"
    except Retry:
        raise
    except StoreError as error:
        countdown = backoff_seconds(self.request.retries)
        logger.warning("store unavailable, retrying analyse: event_id=%s error=%s", event_id, error)
        raise self.retry(exc=error, countdown=countdown)


def _save_deep_failure(event_id: str, error: Exception) -> str:
    logger.error("analyse failed: event_id=%s error=%s", event_id, error)
    get_store().execute(
        "save_deep",
        event_id=event_id,
        root_cause=None,
        recommended_action=None,
        classifier=None,
        status="failed",
        prompt_tokens=0,
        completion_tokens=0,
        error=f"deep analysis: {error}",
    )
    return "failed"


@app.task(name=SWEEP_TASK)
def sweep_stale():
    """Re-queue rows left unclassified; after SWEEP_MAX_ATTEMPTS sweeps, classify them with the rules."""
    if not settings.worker_enabled:
        logger.info("sweep skipped: WORKER_ENABLED=false")
        return {"requeued": 0, "ruled": 0, "deep_requeued": 0}
    store = get_store()
    requeued = ruled = 0
    for row in store.fetchall("stale_unclassified", stale_after=settings.stale_after_seconds, limit=SWEEP_BATCH):
        event_id = row["event_id"]
        store.execute("mark_swept", event_id=event_id)
        if row["sweeps"] + 1 >= settings.sweep_max_attempts:
            event = store.fetchone("get_event", event_id=event_id)
            reason = f"still unclassified after {row['sweeps'] + 1} sweeps; last error: {event['last_error']}"
            save_and_route(event_id, rules.classify(event["context"], reason=reason), first_seen=False)
            logger.warning("sweep applied rules: event_id=%s reason=%s", event_id, reason)
            ruled += 1
        else:
            event = store.fetchone("get_event", event_id=event_id)
            payload = {"v": PAYLOAD_VERSION, "event_id": event_id, "context": event["context"], "source": "sweep"}
            app.send_task(INGEST_TASK, args=[payload], queue=settings.bulk_queue)
            logger.info("sweep re-queued: event_id=%s sweep=%d", event_id, row["sweeps"] + 1)
            requeued += 1

    deep_requeued = 0
    if settings.use_llm:
        for row in store.fetchall("stale_deep", stale_after=settings.stale_after_seconds, limit=SWEEP_BATCH):
            store.execute("touch_deep", event_id=row["event_id"])
            app.send_task(DEEP_TASK, args=[row["event_id"]], queue=settings.deep_queue)
            deep_requeued += 1
    if requeued or ruled or deep_requeued:
        logger.info("sweep done: requeued=%d ruled=%d deep_requeued=%d", requeued, ruled, deep_requeued)
    return {"requeued": requeued, "ruled": ruled, "deep_requeued": deep_requeued}
