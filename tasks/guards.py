"""Reasons not to call the provider right now: an open circuit or a spent daily budget.

The circuit's state lives in Redis (the broker) so every worker process on
every machine reads the same state. When Redis itself fails, the guards let the
call through: the provider call is then the only thing at risk, not the event.
"""

import datetime
import logging
import time
from typing import Callable, Optional

import redis

logger = logging.getLogger(__name__)

_PREFIX = "errortriage:circuit"


class CircuitBreaker:
    """Opens after `threshold` consecutive failures, or at once on a permanent one.

    While open, `open_reason()` returns why, and callers classify with the
    rules. When the cool-down expires the next call is a probe: a success closes
    the circuit, and another failure opens it again at once.
    """

    def __init__(self, client: redis.Redis, threshold: int, cooldown_seconds: float):
        self.client = client
        self.threshold = threshold
        self.cooldown_seconds = cooldown_seconds

    def open_reason(self) -> Optional[str]:
        try:
            reason = self.client.get(f"{_PREFIX}:open")
        except redis.RedisError as error:
            logger.warning("circuit state unreadable, allowing the call: %s", error)
            return None
        return reason.decode() if reason else None

    def record_success(self) -> None:
        try:
            failures = self.client.getdel(f"{_PREFIX}:failures")
        except redis.RedisError:
            return
        if failures and int(failures) >= self.threshold:
            logger.warning("circuit closed: the provider responded again after %d failures", int(failures))

    def record_failure(self, reason: str, permanent: bool = False) -> None:
        try:
            failures = self.client.incr(f"{_PREFIX}:failures")
            self.client.expire(f"{_PREFIX}:failures", int(self.cooldown_seconds * 4) + 1)
            if permanent or failures >= self.threshold:
                # NX: only the process that opens the circuit logs it, once per opening.
                opened = self.client.set(f"{_PREFIX}:open", reason, nx=True, ex=max(1, int(self.cooldown_seconds)))
                if opened:
                    logger.warning(
                        "circuit opened for %.0fs after %d failures: %s; classifying with the rules meanwhile",
                        self.cooldown_seconds, failures, reason,
                    )
        except redis.RedisError as error:
            logger.warning("circuit state not updated: %s", error)


class DailyBudget:
    """Compares today's recorded spend with LLM_DAILY_BUDGET_USD, re-reading it at most every 30 s."""

    CACHE_SECONDS = 30.0

    def __init__(self, limit_usd: Optional[float], read_spend: Callable[[], float], client: Optional[redis.Redis] = None):
        self.limit_usd = limit_usd
        self.read_spend = read_spend
        self.client = client
        self._cached = (0.0, -1e9)

    def exceeded(self) -> Optional[str]:
        """Return why the budget stops provider calls today, or None."""
        if self.limit_usd is None:
            return None
        spend, read_at = self._cached
        if time.monotonic() - read_at > self.CACHE_SECONDS:
            spend = self.read_spend()
            self._cached = (spend, time.monotonic())
        if spend < self.limit_usd:
            return None
        reason = f"daily LLM budget of ${self.limit_usd:.2f} reached (${spend:.4f} spent today)"
        self._log_once_per_day(reason)
        return reason

    def spent(self, cost_usd: float) -> None:
        """Add a call's cost to the cached spend so the cap applies between reads."""
        spend, read_at = self._cached
        self._cached = (spend + cost_usd, read_at)

    def _log_once_per_day(self, reason: str) -> None:
        key = f"errortriage:budget-logged:{datetime.date.today().isoformat()}"
        try:
            first = self.client.set(key, "1", nx=True, ex=2 * 86400) if self.client else True
        except redis.RedisError:
            first = True
        if first:
            logger.warning("%s; classifying with the rules until midnight (database time)", reason)
