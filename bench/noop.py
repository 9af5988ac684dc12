"""A Celery app with one no-op task and the workers' own configuration: the broker's ceiling.

    celery -A bench.noop worker -Q bulk

Same broker, serializer, acks_late, prefetch and task events as tasks.app, so
the no-op rate is what Celery and Redis alone allow on this machine.
"""

from celery import Celery

from config import load_settings
from config.celeryconfig import worker_config

NOOP_TASK = "bench.noop"

settings = load_settings()
app = Celery("errortriage-bench-noop")
app.conf.update(worker_config(settings))
# beat is never started for this app; drop its schedule so nothing refers to the real tasks.
app.conf.beat_schedule = {}


@app.task(name=NOOP_TASK)
def noop(payload):
    """Take the same payload the ingest task takes and do nothing with it."""
    return None
