import pytest

from config.errors import ConfigError
from config.settings import DEFAULT_PRICES_USD_PER_MTOK, PLACEHOLDER_API_KEY, Settings, load_settings

LONG_KEY = "sk-test-0123456789abcdefghijklmnop"


def load_isolated(environ, env_file=None, tmp_path=None):
    """Load settings from `environ` only, ignoring the process environment and any real .env."""
    if env_file is None:
        env_file = tmp_path / "absent.env"
    return load_settings(environ=environ, env_file=env_file)


def test_settings_defaults(tmp_path):
    settings = load_isolated({}, tmp_path=tmp_path)

    assert settings == Settings()
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.llm_base_url is None
    assert settings.llm_api_key is None
    assert settings.bulk_model == "gemini-2.5-flash"
    assert settings.deep_model == "gpt-4.1"
    assert settings.llm_timeout_seconds == 30.0
    assert settings.llm_max_tokens == 400
    assert settings.use_fallback_classifier is False
    assert settings.worker_enabled is True
    assert settings.bulk_max_retries == 4
    assert settings.max_context_bytes == 16384
    assert settings.llm_prices_usd_per_mtok == DEFAULT_PRICES_USD_PER_MTOK
    assert settings.llm_configured is False
    assert settings.use_llm is False


def test_env_file_parsed(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# provider\n"
        "\n"
        "export LLM_BASE_URL=http://127.0.0.1:9/v1/\n"
        f'LLM_API_KEY="{LONG_KEY}"\n'
        "BULK_MODEL='deepseek-v3.2'\n"
        "  LLM_TIMEOUT_SECONDS = 7.5  \n"
        "USE_FALLBACK_CLASSIFIER=yes\n",
        encoding="utf-8",
    )

    settings = load_isolated({}, env_file=env_file)

    assert settings.llm_base_url == "http://127.0.0.1:9/v1"
    assert settings.llm_api_key == LONG_KEY
    assert settings.bulk_model == "deepseek-v3.2"
    assert settings.llm_timeout_seconds == 7.5
    assert settings.use_fallback_classifier is True
    assert settings.llm_configured is True
    assert settings.use_llm is False


def test_env_file_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("BULK_MODEL=from-file\nDEEP_MODEL=deep-from-file\n", encoding="utf-8")

    settings = load_isolated({"BULK_MODEL": "from-environment"}, env_file=env_file)

    assert settings.bulk_model == "from-environment"
    assert settings.deep_model == "deep-from-file"


def test_env_file_from_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env_file = tmp_path / "custom.env"
    env_file.write_text("DEEP_MODEL=claude-sonnet-4.5\n", encoding="utf-8")

    settings = load_settings(environ={"ERRORTRIAGE_ENV_FILE": str(env_file)})

    assert settings.deep_model == "claude-sonnet-4.5"


def test_env_file_bad_line(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("BULK_MODEL=x\nthis is not an assignment\n", encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        load_isolated({}, env_file=env_file)

    assert ":2:" in str(raised.value)


def test_env_file_bad_line_hides_key(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(f"LLM_API_KEY {LONG_KEY}\n", encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        load_isolated({}, env_file=env_file)

    assert LONG_KEY not in str(raised.value)


def test_holysheep_aliases(tmp_path):
    settings = load_isolated(
        {"HOLYSHEEP_BASE_URL": "https://127.0.0.1/v1/", "HOLYSHEEP_API_KEY": LONG_KEY},
        tmp_path=tmp_path,
    )

    assert settings.llm_base_url == "https://127.0.0.1/v1"
    assert settings.llm_api_key == LONG_KEY
    assert settings.use_llm is True


def test_aliases_lose_to_primary(tmp_path):
    settings = load_isolated(
        {
            "LLM_BASE_URL": "http://127.0.0.1:1/v1",
            "HOLYSHEEP_BASE_URL": "http://127.0.0.1:2/v1",
            "LLM_API_KEY": LONG_KEY,
            "HOLYSHEEP_API_KEY": "sk-other-key-0000000000000000",
        },
        tmp_path=tmp_path,
    )

    assert settings.llm_base_url == "http://127.0.0.1:1/v1"
    assert settings.llm_api_key == LONG_KEY


def test_api_key_stripped(tmp_path):
    settings = load_isolated({"LLM_API_KEY": f"  {LONG_KEY}\n"}, tmp_path=tmp_path)

    assert settings.llm_api_key == LONG_KEY


@pytest.mark.parametrize("name", ["LLM_API_KEY", "HOLYSHEEP_API_KEY"])
def test_api_key_placeholder_rejected(tmp_path, name):
    with pytest.raises(ConfigError) as raised:
        load_isolated({name: f" {PLACEHOLDER_API_KEY} "}, tmp_path=tmp_path)

    assert name in str(raised.value)


@pytest.mark.parametrize("name", ["LLM_API_KEY", "HOLYSHEEP_API_KEY"])
def test_api_key_inner_whitespace(tmp_path, name):
    key = "sk-test-0123456789 abcdefghijklmnop"

    with pytest.raises(ConfigError) as raised:
        load_isolated({name: key}, tmp_path=tmp_path)

    message = str(raised.value)
    assert name in message
    assert key not in message
    assert "0123456789" not in message


def test_api_key_hidden_in_describe(tmp_path):
    settings = load_isolated(
        {
            "LLM_API_KEY": LONG_KEY,
            "DATABASE_URL": "postgresql://app:db-password-1@127.0.0.1:5432/app",
            "REDIS_URL": "redis://:redis-password-1@127.0.0.1:6379/0",
        },
        tmp_path=tmp_path,
    )

    described = settings.describe()

    assert LONG_KEY not in repr(described)
    assert described["llm_api_key"] == "sk-t...mnop"
    assert "db-password-1" not in described["database_url"]
    assert "redis-password-1" not in described["redis_url"]
    assert described["database_url"] == "postgresql://app:***@127.0.0.1:5432/app"
    assert settings.llm_api_key == LONG_KEY


@pytest.mark.parametrize("value", ["maybe", "2", "enabled", "truee"])
def test_invalid_boolean(tmp_path, value):
    with pytest.raises(ConfigError) as raised:
        load_isolated({"USE_FALLBACK_CLASSIFIER": value}, tmp_path=tmp_path)

    message = str(raised.value)
    assert "USE_FALLBACK_CLASSIFIER" in message
    assert repr(value) in message


@pytest.mark.parametrize(
    "value, expected",
    [("1", True), ("TRUE", True), (" on ", True), ("yes", True), ("0", False), ("off", False), ("No", False)],
)
def test_boolean_spellings(tmp_path, value, expected):
    settings = load_isolated({"WORKER_ENABLED": value}, tmp_path=tmp_path)

    assert settings.worker_enabled is expected


@pytest.mark.parametrize(
    "name, value",
    [
        ("LLM_TIMEOUT_SECONDS", "thirty"),
        ("LLM_TIMEOUT_SECONDS", "0"),
        ("LLM_TIMEOUT_SECONDS", "-5"),
        ("LLM_MAX_TOKENS", "400.5"),
        ("BULK_MAX_RETRIES", "four"),
        ("MAX_CONTEXT_BYTES", "16kb"),
        ("HOOK_QUEUE_SIZE", "0"),
        pytest.param(
            "LLM_TIMEOUT_SECONDS",
            "nan",
        ),
    ],
)
def test_invalid_number(tmp_path, name, value):
    with pytest.raises(ConfigError) as raised:
        load_isolated({name: value}, tmp_path=tmp_path)

    message = str(raised.value)
    assert name in message
    assert repr(value) in message


def test_numbers_parsed(tmp_path):
    settings = load_isolated({"LLM_MAX_TOKENS": " 256 ", "SWEEP_INTERVAL_SECONDS": "0.5"}, tmp_path=tmp_path)

    assert settings.llm_max_tokens == 256
    assert isinstance(settings.llm_max_tokens, int)
    assert settings.sweep_interval_seconds == 0.5


def test_invalid_url_scheme(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_isolated({"REDIS_URL": "http://127.0.0.1:6379/0"}, tmp_path=tmp_path)

    assert "REDIS_URL" in str(raised.value)


def test_prices_parsed(tmp_path):
    settings = load_isolated({"LLM_PRICES_USD_PER_MTOK": "gpt-4.1=10, local-model=0.5"}, tmp_path=tmp_path)

    prices = settings.llm_prices_usd_per_mtok
    assert prices["gpt-4.1"] == 10.0
    assert prices["local-model"] == 0.5
    assert prices["gemini-2.5-flash"] == DEFAULT_PRICES_USD_PER_MTOK["gemini-2.5-flash"]


@pytest.mark.parametrize(
    "value",
    [
        "gpt-4.1",
        "gpt-4.1=eight",
        "=5",
        "gpt-4.1=8,,",
        pytest.param(
            "gpt-4.1=-8",
        ),
    ],
)
def test_prices_invalid(tmp_path, value):
    with pytest.raises(ConfigError) as raised:
        load_isolated({"LLM_PRICES_USD_PER_MTOK": value}, tmp_path=tmp_path)

    assert "LLM_PRICES_USD_PER_MTOK" in str(raised.value)


def test_cost_usd(tmp_path):
    settings = load_isolated({"LLM_PRICES_USD_PER_MTOK": "local-model=2"}, tmp_path=tmp_path)

    assert settings.cost_usd("gpt-4.1", 1_000, 500) == pytest.approx(0.012)
    assert settings.cost_usd("local-model", 250_000, 250_000) == pytest.approx(1.0)
    assert settings.cost_usd("unpriced-model", 10_000, 10_000) == 0.0
    assert settings.cost_usd("gpt-4.1", 0, 0) == 0.0


def test_workers_wait_longer_on_redis_than_the_hook(tmp_path):
    from config.celeryconfig import producer_config, worker_config

    settings = load_isolated({"WORKER_BROKER_SOCKET_TIMEOUT_SECONDS": "45", "BROKER_SOCKET_TIMEOUT_SECONDS": "1.5"},
                             tmp_path=tmp_path)
    worker = worker_config(settings)["broker_transport_options"]
    hook = producer_config(settings)["broker_transport_options"]

    assert worker["socket_timeout"] == 45.0
    assert hook["socket_timeout"] == 1.5
    assert worker["socket_connect_timeout"] == hook["socket_connect_timeout"] == 1.5
    assert load_isolated({}, tmp_path=tmp_path).worker_broker_socket_timeout_seconds == 30.0


def test_worker_socket_timeout_rejects_zero(tmp_path):
    with pytest.raises(ConfigError, match="WORKER_BROKER_SOCKET_TIMEOUT_SECONDS='0'"):
        load_isolated({"WORKER_BROKER_SOCKET_TIMEOUT_SECONDS": "0"}, tmp_path=tmp_path)
