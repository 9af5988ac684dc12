"""Small helpers the integration and end-to-end tests share."""

import time

import pytest


def wait_for(predicate, timeout=30.0, interval=0.1, message="condition"):
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message}")


def llm_env(stub, **extra) -> dict:
    """Environment overrides that point a worker at the loopback provider."""
    return dict(LLM_BASE_URL=stub.base_url, LLM_API_KEY=stub.api_key, **extra)
