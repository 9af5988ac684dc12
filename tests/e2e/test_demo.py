"""`errortriage demo`, the README's first command, on embedded Redis and Postgres."""

import os
import subprocess
import sys


def test_demo_classifies_and_leaves_nothing_running(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    state = tmp_path / "state"

    result = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "demo", "--state-dir", str(state), "--timeout", "120"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "started embedded Redis" in result.stdout
    assert "classifying with the rules" in result.stdout
    table = [line for line in result.stdout.splitlines() if line[:8].isalnum() and len(line.split()) > 4]
    assert len(table) >= 16
    for category in ("EXTERNAL_API", "INFRASTRUCTURE", "VALIDATION", "LOGIC_ERROR", "RATE_LIMIT"):
        assert category in result.stdout
    pattern = f"{state}|demo-bulk@|demo-deep@"
    leftover = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""


def test_demo_with_provider(database_url, redis_url, llm, tmp_path):
    from support.helpers import llm_env

    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=redis_url, **llm_env(llm))

    result = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "demo", "--state-dir", str(tmp_path / "state"), "--timeout", "120"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "classifying with gemini-2.5-flash (deep: gpt-4.1)" in result.stdout
    assert "started embedded" not in result.stdout
    assert "root cause: The inventory service is overloaded." in result.stdout
    assert len(llm.calls("bulk")) >= 8
    assert len(llm.calls("deep")) >= 1
