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
