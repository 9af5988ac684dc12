"""Settings read once from the environment and an optional `.env` file.

Every setting has a default and a unit in its name where it has one. Values that
do not parse raise ConfigError naming the variable, the value and the fix, so a
worker refuses to start rather than run half-configured.
"""

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Mapping, Optional
from urllib.parse import urlsplit

from config.errors import ConfigError

PLACEHOLDER_API_KEY = "YOUR_HOLYSHEEP_API_KEY"

# USD per million tokens, prompt and completion alike. Override or extend with
# LLM_PRICES_USD_PER_MTOK="model=price,model=price".
DEFAULT_PRICES_USD_PER_MTOK = {
    "gpt-4.1": 8.0,
    "claude-sonnet-4.5": 15.0,
    "gemini-2.5-flash": 2.5,
    "deepseek-v3.2": 0.42,
}

# Severity names, most severe first; classifier.schema.Severity has the same values.
SEVERITIES = ("P0_CRITICAL", "P1_HIGH", "P2_MEDIUM", "P3_LOW")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The typed settings of one process. Build it with `load_settings()`."""

    database_url: Optional[str] = None
    redis_url: Optional[str] = None

    llm_base_url: Optional[str] = None
    llm_api_key: Optional[str] = None
    bulk_model: str = "gemini-2.5-flash"
    deep_model: str = "gpt-4.1"
    llm_timeout_seconds: float = 30.0
    llm_max_tokens: int = 400
    llm_prices_usd_per_mtok: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_PRICES_USD_PER_MTOK))

    use_fallback_classifier: bool = False
    worker_enabled: bool = True

    bulk_queue: str = "bulk"
    deep_queue: str = "deep"
    bulk_max_retries: int = 4
    sweep_interval_seconds: float = 60.0
    stale_after_seconds: float = 300.0
    sweep_max_attempts: int = 3

    broker_socket_timeout_seconds: float = 2.0
    worker_broker_socket_timeout_seconds: float = 30.0
    visibility_timeout_seconds: float = 900.0
    hook_queue_size: int = 1000
    max_context_bytes: int = 16384
    spool_dir: str = ".errortriage/spool"
    spool_max_bytes: int = 64 * 1024 * 1024

    reclassify_after_seconds: float = 7 * 24 * 3600.0
    llm_daily_budget_usd: Optional[float] = None
    circuit_failure_threshold: int = 5
    circuit_cooldown_seconds: float = 300.0
    scrub_store: bool = True

    notify_queue: str = "notify"
    slack_webhook_url: Optional[str] = None
    slack_min_severity: str = "P1_HIGH"
    pagerduty_routing_key: Optional[str] = None
    pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    pagerduty_min_severity: str = "P0_CRITICAL"
    notify_cooldown_seconds: float = 3600.0
    sentry_api_token: Optional[str] = None
    sentry_base_url: str = "https://sentry.io"
    sentry_org: Optional[str] = None
    sentry_project: Optional[str] = None
    sentry_set_priority: bool = False
    sentry_preliminary_tags: bool = False

    @property
    def llm_configured(self) -> bool:
        """True when both a provider URL and an API key are set."""
        return bool(self.llm_base_url and self.llm_api_key)

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Return the cost of one call at the configured price; 0 for a model without a price."""
        price = self.llm_prices_usd_per_mtok.get(model, 0.0)
        return (prompt_tokens + completion_tokens) * price / 1_000_000

    @property
    def use_llm(self) -> bool:
        """True when classification should call the provider rather than the rules."""
        return self.llm_configured and not self.use_fallback_classifier

    def describe(self) -> dict:
        """Return the settings with secrets masked, for logs and `errortriage settings`."""
        shown = dataclasses.asdict(self)
        shown["llm_api_key"] = mask_secret(self.llm_api_key)
        shown["database_url"] = mask_url(self.database_url)
        shown["redis_url"] = mask_url(self.redis_url)
        shown["slack_webhook_url"] = mask_secret(self.slack_webhook_url)
        shown["pagerduty_routing_key"] = mask_secret(self.pagerduty_routing_key)
        shown["sentry_api_token"] = mask_secret(self.sentry_api_token)
        return shown


def mask_secret(value: Optional[str]) -> Optional[str]:
    """Keep the first and last four characters of a long secret, hide the rest."""
    if not value:
        return value
    if len(value) <= 12:
        return "***"
    return f"{value[:4]}...{value[-4:]}"


def mask_url(url: Optional[str]) -> Optional[str]:
    """Replace the password of a URL with `***`."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def read_env_file(path: Path) -> dict:
    """Parse KEY=VALUE lines; `#` starts a comment line; quotes around a value are removed."""
    values = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            # The line may hold a secret, so the message shows its position, not its text.
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE; fix or remove the line")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load_settings(environ: Optional[Mapping[str, str]] = None, env_file: Optional[Path] = None) -> Settings:
    """Build Settings from `environ` (default os.environ) over the `.env` file.

    The `.env` file is `ERRORTRIAGE_ENV_FILE` if set, else `.env` in the current
    directory; a variable in the environment wins over the same one in the file.
    """
    environ = dict(os.environ if environ is None else environ)
    if env_file is None:
        named = environ.get("ERRORTRIAGE_ENV_FILE")
        if named and not Path(named).is_file():
            raise ConfigError(f"ERRORTRIAGE_ENV_FILE={named!r} is not a file; fix the path or unset the variable")
        env_file = Path(named or ".env")
    merged = read_env_file(env_file) if env_file.is_file() else {}
    merged.update(environ)
    reader = _Reader(merged)

    base_url = reader.url("LLM_BASE_URL", aliases=("HOLYSHEEP_BASE_URL",))
    api_key = reader.api_key("LLM_API_KEY", aliases=("HOLYSHEEP_API_KEY",))

    return Settings(
        database_url=reader.url("DATABASE_URL", schemes=("postgres", "postgresql")),
        redis_url=reader.url("REDIS_URL", schemes=("redis", "rediss", "redis+socket")),
        llm_base_url=base_url.rstrip("/") if base_url else None,
        llm_api_key=api_key,
        bulk_model=reader.text("BULK_MODEL", Settings.bulk_model),
        deep_model=reader.text("DEEP_MODEL", Settings.deep_model),
        llm_timeout_seconds=reader.number("LLM_TIMEOUT_SECONDS", Settings.llm_timeout_seconds),
        llm_max_tokens=int(reader.number("LLM_MAX_TOKENS", Settings.llm_max_tokens, integer=True)),
        llm_prices_usd_per_mtok=reader.prices("LLM_PRICES_USD_PER_MTOK"),
        use_fallback_classifier=reader.flag("USE_FALLBACK_CLASSIFIER", False),
        worker_enabled=reader.flag("WORKER_ENABLED", True),
        bulk_queue=reader.text("BULK_QUEUE", Settings.bulk_queue),
        deep_queue=reader.text("DEEP_QUEUE", Settings.deep_queue),
        bulk_max_retries=int(reader.number("BULK_MAX_RETRIES", Settings.bulk_max_retries, integer=True, allow_zero=True)),
        sweep_interval_seconds=reader.number("SWEEP_INTERVAL_SECONDS", Settings.sweep_interval_seconds),
        stale_after_seconds=reader.number("STALE_AFTER_SECONDS", Settings.stale_after_seconds),
        sweep_max_attempts=int(reader.number("SWEEP_MAX_ATTEMPTS", Settings.sweep_max_attempts, integer=True)),
        broker_socket_timeout_seconds=reader.number(
            "BROKER_SOCKET_TIMEOUT_SECONDS", Settings.broker_socket_timeout_seconds
        ),
        worker_broker_socket_timeout_seconds=reader.number(
            "WORKER_BROKER_SOCKET_TIMEOUT_SECONDS", Settings.worker_broker_socket_timeout_seconds
        ),
        visibility_timeout_seconds=reader.number("VISIBILITY_TIMEOUT_SECONDS", Settings.visibility_timeout_seconds),
        hook_queue_size=int(reader.number("HOOK_QUEUE_SIZE", Settings.hook_queue_size, integer=True)),
        max_context_bytes=int(reader.number("MAX_CONTEXT_BYTES", Settings.max_context_bytes, integer=True)),
        spool_dir=reader.path("SPOOL_DIR", Settings.spool_dir),
        spool_max_bytes=int(reader.number("SPOOL_MAX_BYTES", Settings.spool_max_bytes, integer=True)),
        reclassify_after_seconds=reader.number("RECLASSIFY_AFTER_SECONDS", Settings.reclassify_after_seconds),
        llm_daily_budget_usd=reader.optional_number("LLM_DAILY_BUDGET_USD"),
        circuit_failure_threshold=int(
            reader.number("CIRCUIT_FAILURE_THRESHOLD", Settings.circuit_failure_threshold, integer=True)
        ),
        circuit_cooldown_seconds=reader.number("CIRCUIT_COOLDOWN_SECONDS", Settings.circuit_cooldown_seconds),
        scrub_store=reader.flag("SCRUB_STORE", True),
        notify_queue=reader.text("NOTIFY_QUEUE", Settings.notify_queue),
        slack_webhook_url=reader.url("SLACK_WEBHOOK_URL"),
        slack_min_severity=reader.severity("SLACK_MIN_SEVERITY", Settings.slack_min_severity),
        pagerduty_routing_key=reader.secret("PAGERDUTY_ROUTING_KEY"),
        pagerduty_events_url=reader.url("PAGERDUTY_EVENTS_URL") or Settings.pagerduty_events_url,
        pagerduty_min_severity=reader.severity("PAGERDUTY_MIN_SEVERITY", Settings.pagerduty_min_severity),
        notify_cooldown_seconds=reader.number("NOTIFY_COOLDOWN_SECONDS", Settings.notify_cooldown_seconds),
        sentry_api_token=reader.secret("SENTRY_API_TOKEN"),
        sentry_base_url=(reader.url("SENTRY_BASE_URL") or Settings.sentry_base_url).rstrip("/"),
        sentry_org=reader.text("SENTRY_ORG", "") or None,
        sentry_project=reader.text("SENTRY_PROJECT", "") or None,
        sentry_set_priority=reader.flag("SENTRY_SET_PRIORITY", False),
        sentry_preliminary_tags=reader.flag("SENTRY_PRELIMINARY_TAGS", False),
    )


class _Reader:
    """Typed access to the merged variables, raising ConfigError with the fix."""

    def __init__(self, values: Mapping[str, str]):
        self.values = values

    def _raw(self, name: str, aliases=()) -> Optional[str]:
        for key in (name, *aliases):
            value = self.values.get(key)
            if value is not None and value.strip() != "":
                return value
        return None

    def text(self, name: str, default: str) -> str:
        value = self._raw(name)
        if value is None:
            return default
        value = value.strip()
        if re.search(r"\s", value):
            raise ConfigError(f"{name}={value!r} contains whitespace; set a single name such as {default!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{name}={value!r} is not a boolean; set it to true or false")

    def number(self, name: str, default: float, integer: bool = False, allow_zero: bool = False) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            parsed = int(value) if integer else float(value)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise ConfigError(f"{name}={value!r} is not {kind}; set it to {kind} such as {default}") from None
        if not math.isfinite(parsed) or parsed < 0 or (parsed == 0 and not allow_zero):
            bound = "zero or more" if allow_zero else "greater than zero"
            raise ConfigError(f"{name}={value!r} must be {bound}; the default is {default}")
        return parsed

    def path(self, name: str, default: str) -> str:
        value = self._raw(name)
        return value.strip() if value is not None else default

    def optional_number(self, name: str) -> Optional[float]:
        if self._raw(name) is None:
            return None
        return self.number(name, 0.0)

    def severity(self, name: str, default: str) -> str:
        value = self._raw(name)
        if value is None:
            return default
        value = value.strip().upper()
        if value not in SEVERITIES:
            raise ConfigError(f"{name}={value!r} is not a severity; set one of {', '.join(SEVERITIES)}")
        return value

    def secret(self, name: str) -> Optional[str]:
        value = self._raw(name)
        if value is None:
            return None
        value = value.strip()
        if re.search(r"\s", value):
            raise ConfigError(f"{name}={mask_secret(value)!r} contains whitespace; copy the value again without spaces")
        return value

    def prices(self, name: str) -> dict:
        prices = dict(DEFAULT_PRICES_USD_PER_MTOK)
        value = self._raw(name)
        if value is None:
            return prices
        for item in value.split(","):
            model, sep, price = item.strip().partition("=")
            try:
                prices[model.strip()] = float(price)
            except ValueError:
                raise ConfigError(
                    f"{name} has {item.strip()!r}; write model=price pairs separated by commas, "
                    "such as gpt-4.1=8,gemini-2.5-flash=2.5"
                ) from None
            if not sep or not model.strip():
                raise ConfigError(f"{name} has {item.strip()!r}; write model=price, such as gpt-4.1=8")
            if not math.isfinite(prices[model.strip()]) or prices[model.strip()] < 0:
                raise ConfigError(f"{name} has {item.strip()!r}; a price must be a number of 0 or more")
        return prices

    def url(self, name: str, aliases=(), schemes=("http", "https")) -> Optional[str]:
        value = self._raw(name, aliases)
        if value is None:
            return None
        value = value.strip()
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in schemes:
            expected = " or ".join(f"{s}://" for s in schemes)
            raise ConfigError(f"{name}={mask_url(value)!r} must start with {expected}")
        return value

    def api_key(self, name: str, aliases=()) -> Optional[str]:
        used = next((key for key in (name, *aliases) if self._raw(key) is not None), name)
        value = self._raw(name, aliases)
        if value is None:
            return None
        value = value.strip()
        if value == PLACEHOLDER_API_KEY:
            raise ConfigError(
                f"{used} is still the placeholder {PLACEHOLDER_API_KEY!r}; "
                "set your provider's API key, or unset it to classify with the rules only"
            )
        if re.search(r"\s", value):
            raise ConfigError(
                f"{used}={mask_secret(value)!r} contains whitespace inside the key; "
                "copy the key again without spaces or line breaks"
            )
        return value
