"""The workers' own Celery app with a short Redis visibility timeout, for the whole-worker SIGKILL case.

A worker killed as a whole leaves the messages it held unacked in Redis,
and kombu gives them back only after the visibility timeout
(VISIBILITY_TIMEOUT_SECONDS, 15 minutes by default, never under 450 s). The
test cannot wait that long, so its workers use
FAULT_VISIBILITY_TIMEOUT_SECONDS; nothing else differs from `tasks.app`.
"""

import os

from tasks.app import app

_options = dict(app.conf.broker_transport_options)
_options["visibility_timeout"] = float(os.environ.get("FAULT_VISIBILITY_TIMEOUT_SECONDS", "10"))
# Look for abandoned messages every 2 s instead of about every 100 s (kombu's defaults).
_options["unacked_restore_interval"] = 2
_options["unacked_restore_throttle"] = 1
app.conf.broker_transport_options = _options

__all__ = ["app"]
