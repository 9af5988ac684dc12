"""The Celery app of the workers and beat: `celery -A tasks.app worker -Q bulk`.

Settings are read once at import; an invalid setting stops the worker at start
with the ConfigError that names it.
"""

import logging
import sys

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from config import ConfigError, load_settings
from config.celeryconfig import worker_config
from tasks import broker

logger = logging.getLogger(__name__)

try:
    settings = load_settings()
except ConfigError as error:
    # Celery prints its own usage text after this; the line that matters comes first.
    sys.stderr.write(f"errortriage: invalid setting: {error}\n")
    raise

# An ack that Redis does not confirm must not cost the worker a prefetch slot.
broker.install()

app = Celery("errortriage", include=["tasks.triage", "tasks.notify"])
app.conf.update(worker_config(settings))


@worker_ready.connect
def _log_start(sender=None, **kwargs):
    queues = sorted(queue.name for queue in sender.app.amqp.queues.consume_from.values()) if sender else []
    logger.info("worker ready: queues=%s settings=%s", ",".join(queues), settings.describe())
    if settings.bulk_queue not in queues:
        return
    if not settings.llm_configured:
        logger.warning("no LLM_API_KEY or LLM_BASE_URL configured: classifying with the rules only")
    elif settings.use_fallback_classifier:
        logger.warning("USE_FALLBACK_CLASSIFIER=true: classifying with the rules only")
    if not settings.worker_enabled:
        logger.warning("WORKER_ENABLED=false: storing events without classifying them")


@worker_shutdown.connect
def _log_stop(**kwargs):
    logger.info("worker stopping")


@worker_process_init.connect
def _reset_after_fork(**kwargs):
    # The pool re-creates itself per process id; closing here only drops the
    # reference so the child never touches the parent's sockets.
    from tasks import triage

    triage.reset_process_state()
