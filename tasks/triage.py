"""The Celery tasks: store and classify on the bulk queue, analyse on the deep queue, sweep from beat.

Every task is idempotent on event_id: a message delivered twice (late acks,
a killed worker, a sweep) finds the row already stored or classified and
does nothing more. Classification happens once per fingerprint: later events
of a classified fingerprint inherit its classification without a provider call.
"""

import json
import logging
import random
from typing import Optional

import redis
from celery.exceptions import Retry

from classifier import rules
from classifier.errors import InvalidEventError, LLMError, LLMPermanentError, LLMRetryableError
from classifier.fingerprint import fingerprint, signature
from classifier.llm import CallRecord, LLMClient
from classifier.schema import RULES, Category, Classification, Severity
from classifier.scrub import scrub_value
from config.celeryconfig import DEEP_TASK, INGEST_TASK, MAX_RETRY_COUNTDOWN_SECONDS, SWEEP_TASK, backoff_seconds
from tasks.app import app, settings
from tasks.guards import CircuitBreaker, DailyBudget
from tasks.notify import enqueue_notifications, requeue_outbox
from tasks.payload import PAYLOAD_VERSION, check_payload
from tasks.store import Store, StoreDataError, StoreError, store_for

logger = logging.getLogger(__name__)

DEEP_MAX_RETRIES = 3
SWEEP_BATCH = 500
# How long a worker may hold a fingerprint while it classifies: two full provider
# timeouts plus slack, so a killed worker's claim expires on its own.
CLAIM_SECONDS = 2 * settings.llm_timeout_seconds + 30
# Wait between checks while another worker classifies the same fingerprint.
CLAIM_WAIT_SECONDS = 1.0

_client: Optional[LLMClient] = None
_redis: Optional[redis.Redis] = None
_circuit: Optional[CircuitBreaker] = None
_budget: Optional[DailyBudget] = None


def reset_process_state() -> None:
    """Forget the HTTP session and Redis client inherited through fork; the Store renews its own pool."""
    global _client, _redis, _circuit, _budget
    _client = _redis = _circuit = _budget = None


def get_store() -> Store:
    return store_for(settings.database_url)


def get_client() -> LLMClient:
    global _client
    if _client is None:
        _client = LLMClient(
            settings.llm_base_url, settings.llm_api_key, settings.llm_timeout_seconds, settings.llm_max_tokens
        )
    return _client


def _get_redis() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.broker_socket_timeout_seconds,
            socket_connect_timeout=settings.broker_socket_timeout_seconds,
        )
    return _redis


def get_circuit() -> CircuitBreaker:
    global _circuit
    if _circuit is None:
        _circuit = CircuitBreaker(_get_redis(), settings.circuit_failure_threshold, settings.circuit_cooldown_seconds)
    return _circuit


def get_budget() -> DailyBudget:
    global _budget
    if _budget is None:
        def read_spend() -> float:
            return float(get_store().fetchone("spend_today")["cost_usd"])

        _budget = DailyBudget(settings.llm_daily_budget_usd, read_spend, _get_redis())
    return _budget


def call_recorder(event_id: str, event_fingerprint: str, tier: str):
    """Return an observer that stores every provider call with its tokens and cost."""
    def record(call: CallRecord) -> None:
        cost = settings.cost_usd(call.model, call.usage.prompt_tokens, call.usage.completion_tokens)
        get_budget().spent(cost)
        get_store().execute(
            "record_llm_call",
            event_id=event_id,
            fingerprint=event_fingerprint,
            tier=tier,
            model=call.model,
            prompt_tokens=call.usage.prompt_tokens,
            completion_tokens=call.usage.completion_tokens,
            cost_usd=cost,
            latency_ms=int(call.latency_seconds * 1000),
            outcome=call.outcome[:500],
        )

    return record


def rules_reason() -> Optional[str]:
    """Return why the rules must classify now instead of the provider, or None to call it."""
    if settings.use_fallback_classifier:
        return "USE_FALLBACK_CLASSIFIER=true"
    if not settings.llm_configured:
        return "no LLM configured"
    circuit = get_circuit().open_reason()
    if circuit:
        return f"circuit open: {circuit}"
    return get_budget().exceeded()


def is_fresh(fingerprint_row: Optional[dict], release: Optional[str]) -> bool:
    """True when a fingerprint's provider classification can be inherited by a new event."""
    if not fingerprint_row or fingerprint_row["classified_at"] is None:
        return False
    from datetime import datetime, timezone

    age = (datetime.now(timezone.utc) - fingerprint_row["classified_at"]).total_seconds()
    if age > settings.reclassify_after_seconds:
        return False
    previous = fingerprint_row["classified_release"]
    return not (release and previous and release != previous)


def classify_with_llm(task, row: dict) -> Classification:
    """Classify with the bulk model; retry the task on a retryable error, fall back to rules on the rest."""
    event_id, context = row["event_id"], row["context"]
    observer = call_recorder(event_id, row["fingerprint"], "bulk")
    try:
        classification = get_client().classify(scrub_value(context), settings.bulk_model, observer)
    except LLMRetryableError as error:
        get_circuit().record_failure(str(error))
        get_store().execute("record_attempt", event_id=event_id, error=str(error))
        attempts = row["attempts"] + 1
        if attempts <= settings.bulk_max_retries:
            countdown = min(error.retry_after_seconds or backoff_seconds(attempts - 1), MAX_RETRY_COUNTDOWN_SECONDS)
            logger.warning(
                "classify retry: event_id=%s attempt=%d countdown=%.1fs error=%s", event_id, attempts, countdown, error,
            )
            raise task.retry(countdown=countdown)
        logger.error("classify gave up on provider: event_id=%s attempts=%d error=%s; using rules", event_id, attempts, error)
        return rules.classify(context, reason=f"provider failed {attempts} times: {error}")
    except LLMPermanentError as error:
        # 401, 403 and an exhausted quota will fail for every event: open the circuit at once.
        blocking = error.status in (401, 403) or "insufficient_quota" in str(error)
        get_circuit().record_failure(str(error), permanent=blocking)
        get_store().execute("record_attempt", event_id=event_id, error=str(error))
        logger.error("classify permanent provider error: event_id=%s error=%s; using rules", event_id, error)
        return rules.classify(context, reason=f"provider error: {error}")
    get_circuit().record_success()
    return classification


def wants_deep(classification: Classification) -> bool:
    """Deep analysis is for a provider-classified fingerprint that is urgent or not understood."""
    if classification.classifier == RULES or not settings.use_llm:
        return False
    urgent = classification.severity in (Severity.P0_CRITICAL, Severity.P1_HIGH)
    unclear = classification.category in (Category.LOGIC_ERROR, Category.UNKNOWN)
    return urgent or unclear


def _classification_params(event_id: str, classification: Classification) -> dict:
    return {
        "event_id": event_id,
        "category": classification.category.value,
        "severity": classification.severity.value,
        "summary": classification.summary,
        "classifier": classification.classifier,
        "note": classification.reason,
        "prompt_tokens": classification.usage.prompt_tokens,
        "completion_tokens": classification.usage.completion_tokens,
    }


def _log_classified(event_id: str, category: str, severity: str, classifier: str, inherited: bool = False) -> None:
    logger.info(
        "classified: event_id=%s category=%s severity=%s classifier=%s inherited=%s",
        event_id, category, severity, classifier, inherited,
    )


def save_event_classification(event_id: str, classification: Classification) -> bool:
    """Store a classification on the event row once; return False if it was classified before."""
    row = get_store().fetchone("save_classification", **_classification_params(event_id, classification))
    if row is None:
        logger.info("classification already stored: event_id=%s", event_id)
        return False
    _log_classified(event_id, classification.category.value, classification.severity.value, classification.classifier)
    enqueue_notifications(event_id, "classified")
    return True


def classify_in_transaction(tx, row: dict, fingerprint_row: Optional[dict]) -> Optional[str]:
    """Classify without the provider inside the storing transaction, when that is possible.

    Return "inherited" or "rules" when the row was classified, or None when the
    provider must be called (after the row is committed).
    """
    release = (row["context"] or {}).get("release")
    if is_fresh(fingerprint_row, release):
        saved = tx.fetchone("save_inherited", event_id=row["event_id"])
        if saved is not None:
            _log_classified(row["event_id"], saved["category"], saved["severity"], saved["classifier"], inherited=True)
        return "inherited"
    reason = rules_reason()
    if reason is None:
        return None
    classification = rules.classify(row["context"], reason=reason)
    if tx.fetchone("save_classification", **_classification_params(row["event_id"], classification)) is not None:
        _log_classified(row["event_id"], classification.category.value, classification.severity.value, RULES)
    return "rules"


def inherit(event_id: str) -> str:
    """Give an event its fingerprint's classification and deep analysis, without a provider call."""
    row = get_store().fetchone("save_inherited", event_id=event_id)
    if row is None:
        logger.info("classification already stored: event_id=%s", event_id)
        return "already-classified"
    _log_classified(event_id, row["category"], row["severity"], row["classifier"], inherited=True)
    enqueue_notifications(event_id, "classified")
    return "inherited"


def route_deep(event_id: str, event_fingerprint: str, classification: Classification) -> None:
    """Queue deep analysis once per fingerprint, when the classification calls for it."""
    if not wants_deep(classification):
        return
    store = get_store()
    claimed = store.fetchone(
        "claim_fingerprint_deep",
        fingerprint=event_fingerprint,
        claim_seconds=settings.stale_after_seconds,
        reanalyse_after=settings.reclassify_after_seconds,
    )
    if claimed and store.fetchone("claim_deep", event_id=event_id):
        app.send_task(DEEP_TASK, args=[event_id], queue=settings.deep_queue)


def classify_with_provider(task, row: dict) -> str:
    """Classify one stored, unclassified event with the provider, under a claim on its fingerprint."""
    store = get_store()
    event_id, event_fingerprint = row["event_id"], row["fingerprint"]
    release = (row["context"] or {}).get("release")

    # One worker classifies a fingerprint; the others wait, then inherit.
    claimed = store.fetchone(
        "claim_fingerprint",
        fingerprint=event_fingerprint,
        claim_seconds=CLAIM_SECONDS,
        reclassify_after=settings.reclassify_after_seconds,
        release=release,
    )
    if not claimed:
        fingerprint_row = store.fetchone("get_fingerprint", fingerprint=event_fingerprint)
        if is_fresh(fingerprint_row, release):
            return inherit(event_id)
        logger.debug("fingerprint busy, waiting: event_id=%s fingerprint=%s", event_id, event_fingerprint)
        raise task.retry(countdown=CLAIM_WAIT_SECONDS + random.uniform(0, CLAIM_WAIT_SECONDS))
    try:
        classification = classify_with_llm(task, row)
    except BaseException:
        store.execute("release_fingerprint_claim", fingerprint=event_fingerprint)
        raise

    if classification.classifier == RULES:
        store.execute("release_fingerprint_claim", fingerprint=event_fingerprint)
    else:
        store.execute(
            "save_fingerprint_classification",
            fingerprint=event_fingerprint,
            category=classification.category.value,
            severity=classification.severity.value,
            summary=classification.summary,
            classifier=classification.classifier,
            release=release,
        )
    if save_event_classification(event_id, classification):
        route_deep(event_id, event_fingerprint, classification)
    return classification.category.value


def _dead_letter(task_id: Optional[str], payload, error: Exception) -> None:
    try:
        raw = json.dumps(payload, default=repr)
    except (TypeError, ValueError, RecursionError):
        raw = repr(payload)
    get_store().execute("dead_letter", task_id=task_id, payload=raw[:1_000_000], error=str(error))
    logger.error("dead-lettered payload: task_id=%s error=%s", task_id, error)


def _retry_on_store_error(task, event_id, error: StoreError):
    countdown = backoff_seconds(task.request.retries)
    logger.warning(
        "store unavailable, retrying: task=%s event_id=%s retry=%d countdown=%.1fs error=%s",
        task.name, event_id, task.request.retries + 1, countdown, error,
    )
    return task.retry(exc=error, countdown=countdown)


# max_retries=None: a task waiting for Postgres or for another worker's claim
# retries until it succeeds; the provider's retry budget is counted per row
# (the attempts column) instead.
@app.task(name=INGEST_TASK, bind=True, max_retries=None)
def ingest_event(self, payload):
    """Store an event from the hook, `errortriage ingest` or the sweep, then classify it."""
    event_id = payload.get("event_id") if isinstance(payload, dict) else None
    try:
        try:
            event_id, context = check_payload(payload)
        except InvalidEventError as error:
            _dead_letter(self.request.id, payload, error)
            return "dead-letter"

        event_fingerprint = fingerprint(context)
        # Storing and, in the common cases (inherit, rules), classifying commit together.
        with get_store().transaction() as tx:
            new, row, fingerprint_row = tx.receive_event(event_id, event_fingerprint, signature(context), context)
            if not settings.worker_enabled:
                outcome = "stored"
            elif row["classified_at"] is not None:
                outcome = "already-classified"
            else:
                outcome = classify_in_transaction(tx, row, fingerprint_row)
        if new:
            logger.info("stored: event_id=%s fingerprint=%s", event_id, event_fingerprint)
        if outcome in ("inherited", "rules"):
            enqueue_notifications(event_id, "classified")
        if outcome is None:
            return classify_with_provider(self, row)
        return outcome
    except Retry:
        raise
    except StoreError as error:
        raise _retry_on_store_error(self, event_id, error)
    except StoreDataError as error:
        _dead_letter(self.request.id, payload, error)
        return "dead-letter"
    except Exception as error:
        # A bug must not lose the event: keep the payload where an operator can replay it.
        # A row already stored is also picked up again by the sweep.
        logger.exception("ingest failed: event_id=%s", event_id)
        try:
            _dead_letter(self.request.id, payload, error)
        except (StoreError, StoreDataError):
            raise self.retry(exc=error, countdown=backoff_seconds(self.request.retries))
        return "dead-letter"


@app.task(name=DEEP_TASK, bind=True, max_retries=None)
def analyse_event(self, event_id):
    """Ask the deep model for root cause and recommended action of one stored event."""
    try:
        store = get_store()
        row = store.fetchone("get_event", event_id=event_id)
        if row is None or row["deep_status"] != "queued":
            return "skipped"
        observer = call_recorder(event_id, row["fingerprint"], "deep")
        try:
            analysis = get_client().analyse(scrub_value(row["context"]), row, settings.deep_model, observer)
        except LLMRetryableError as error:
            if self.request.retries < DEEP_MAX_RETRIES:
                countdown = min(error.retry_after_seconds or backoff_seconds(self.request.retries), MAX_RETRY_COUNTDOWN_SECONDS)
                logger.warning("analyse retry: event_id=%s countdown=%.1fs error=%s", event_id, countdown, error)
                raise self.retry(countdown=countdown)
            return _save_deep_failure(event_id, error)
        except LLMError as error:
            return _save_deep_failure(event_id, error)

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
        store.execute(
            "save_fingerprint_deep",
            fingerprint=row["fingerprint"],
            root_cause=analysis.root_cause,
            recommended_action=analysis.recommended_action,
            classifier=analysis.classifier,
        )
        logger.info("analysed: event_id=%s model=%s", event_id, analysis.classifier)
        enqueue_notifications(event_id, "analysed")
        return "done"
    except Retry:
        raise
    except StoreError as error:
        raise _retry_on_store_error(self, event_id, error)


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
        return {"requeued": 0, "ruled": 0, "deep_requeued": 0, "notifications": 0}
    store = get_store()
    requeued = ruled = 0
    for row in store.fetchall("stale_unclassified", stale_after=settings.stale_after_seconds, limit=SWEEP_BATCH):
        event_id = row["event_id"]
        store.execute("mark_swept", event_id=event_id)
        event = store.fetchone("get_event", event_id=event_id)
        if row["sweeps"] + 1 >= settings.sweep_max_attempts:
            reason = f"still unclassified after {row['sweeps'] + 1} sweeps; last error: {event['last_error']}"
            save_event_classification(event_id, rules.classify(event["context"], reason=reason))
            logger.warning("sweep applied rules: event_id=%s reason=%s", event_id, reason)
            ruled += 1
        else:
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
    notifications = requeue_outbox()
    if requeued or ruled or deep_requeued or notifications:
        logger.info("sweep done: requeued=%d ruled=%d deep_requeued=%d notifications=%d",
                    requeued, ruled, deep_requeued, notifications)
    return {"requeued": requeued, "ruled": ruled, "deep_requeued": deep_requeued, "notifications": notifications}
