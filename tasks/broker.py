"""Keep a worker consuming when Redis stops responding for a while.

kombu's Redis transport records each message a worker takes twice. One record
is a hash in Redis, from which the message returns to its queue after the
visibility timeout. The other is the channel's own table, whose size the
prefetch count limits. Two steps of that bookkeeping go wrong when Redis
times out (frozen, partitioned, failing over):

- ack and reject first delete the Redis record and only then free the
  channel's slot. When the delete raises, the slot is never freed. After
  prefetch-count such failures the worker is still up, answers pings and
  shows in Flower, but takes no more messages until it is restarted.
- A message arrives by BRPOP, which removes it from its queue, and only then
  is its Redis record written. When that write raises, the error ends the
  consumer's connection and the message, now in no queue and in no record, is
  gone.

A third step fails when the connection is lost while a message is unacked.
Celery closes the channel after it has already dropped the connection, so
kombu's attempt to return the message to Redis raises AttributeError and the
worker exits with "Unrecoverable error".

AckSafeQoS frees the slot whether or not Redis confirmed the ack. It hands a
message whose record could not be written to the worker anyway, so the task
runs and stores the event. It logs a failed return to Redis instead of raising
it. A message whose ack did not reach Redis is delivered once more after the
visibility timeout. The tasks are idempotent on event_id, so the second run
changes nothing. A delete that waited in the socket while Redis was stopped is
often applied when Redis resumes, and then nothing comes back.

What this cannot repair: a connection the consumer drops while its BRPOP is
still unanswered. Redis runs the BRPOP when it resumes and writes the message
to a closed socket. The workers' broker socket timeout
(WORKER_BROKER_SOCKET_TIMEOUT_SECONDS) is long so that a stall shorter than
it drops no connection at all.

`install()` puts the class in place for the process. Only the workers' Celery
app calls it, never the hook inside a user's app.
"""

import logging

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

logger = logging.getLogger(__name__)


def _task_id(message) -> str:
    headers = getattr(message, "headers", None) or {}
    return str(headers.get("id", "?"))


class AckSafeQoS(kombu_redis.QoS):
    """kombu's Redis QoS that keeps its prefetch slots, its messages and the worker when Redis raises."""

    def append(self, message, delivery_tag):
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors as error:
            # The base class's append, without the Redis record: the slot is
            # taken and the message goes on to the worker.
            virtual.QoS.append(self, message, delivery_tag)
            logger.warning(
                "Redis did not record the delivery of task_id=%s delivery_tag=%s (%s: %s); running it anyway, "
                "without redelivery if this worker dies before it finishes",
                _task_id(message), delivery_tag, type(error).__name__, error,
            )

    def restore_unacked(self, client=None):
        # After a lost connection Celery closes a channel it already collected, so
        # kombu raises AttributeError here, which would stop the whole worker.
        try:
            return super().restore_unacked(client)
        except Exception as error:
            unacked = len(self._delivered)
            self._delivered.clear()
            logger.warning(
                "failed to return %d unacked message(s) to Redis (%s: %s); their Redis records, if Redis kept "
                "them, bring them back after the visibility timeout", unacked, type(error).__name__, error,
            )
            return None

    def ack(self, delivery_tag):
        try:
            super().ack(delivery_tag)
        except BaseException:
            self._free_slot(delivery_tag, "ack")
            raise

    def reject(self, delivery_tag, requeue=False):
        try:
            super().reject(delivery_tag, requeue=requeue)
        except BaseException:
            self._free_slot(delivery_tag, "reject")
            raise

    def _free_slot(self, delivery_tag, action: str) -> None:
        # The base class's ack only moves the tag to the set of settled tags;
        # doing it a second time is harmless.
        virtual.QoS.ack(self, delivery_tag)
        logger.warning(
            "Redis did not confirm the %s of delivery_tag=%s; the message may come back after the visibility "
            "timeout and its task run again, which is idempotent", action, delivery_tag,
        )


def install() -> None:
    """Make every Redis channel this process opens use AckSafeQoS (sentinel channels included)."""
    if not issubclass(kombu_redis.Channel.QoS, AckSafeQoS):
        kombu_redis.Channel.QoS = AckSafeQoS
