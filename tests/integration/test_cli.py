"""The errortriage command against the test Postgres and Redis, with real worker processes."""

import json
import subprocess
import sys
from pathlib import Path

from support.helpers import wait_for

EVENTS = sorted((Path(__file__).resolve().parents[1] / "data" / "events").glob("*.json"))


def errortriage(env, *args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "tasks.cli", *args], env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_ingest_every_bundled_event(store, worker_env, start_worker):
    assert len(EVENTS) == 10
    start_worker()

    result = errortriage(worker_env, "ingest", *map(str, EVENTS))

    assert result.returncode == 0, result.stderr
    assert "queued 10 events from 10 files" in result.stdout
    wait_for(lambda: store.fetchone("count_events")["classified"] == 10, message="10 classified rows")
    with store.cursor() as cursor:
        cursor.execute("SELECT count(*) AS n FROM dead_letters")
        assert cursor.fetchone()["n"] == 0


def test_ingest_jsonl_and_bad_file(store, worker_env, start_worker, tmp_path):
    start_worker()
    lines = [json.dumps(json.loads(path.read_text())) for path in EVENTS[:3]]
    good = tmp_path / "events.jsonl"
    good.write_text("\n".join(lines) + "\n")
    bad = tmp_path / "broken.json"
    bad.write_text('{"event_id": "x"\n{oops')

    result = errortriage(worker_env, "ingest", str(good), str(bad))

    assert result.returncode == 1
    assert "broken.json:1: not valid JSON" in result.stderr
    assert "queued 3 events from 1 files" in result.stdout
    wait_for(lambda: store.fetchone("count_events")["classified"] == 3, message="3 classified rows")


def test_ingest_twice_stores_once(store, worker_env, start_worker):
    start_worker()
    errortriage(worker_env, "ingest", str(EVENTS[0]))
    errortriage(worker_env, "ingest", str(EVENTS[0]))

    wait_for(lambda: store.fetchone("count_events")["classified"] == 1, message="classified row")
    assert store.fetchone("count_events")["total"] == 1


def test_list_shows_classified(store, worker_env, start_worker):
    start_worker()
    errortriage(worker_env, "ingest", str(EVENTS[-1]))
    wait_for(lambda: store.fetchone("count_events")["classified"] == 1, message="classified row")

    result = errortriage(worker_env, "list")

    assert result.returncode == 0, result.stderr
    assert "category" in result.stdout.splitlines()[0]
    assert "rules" in result.stdout


def test_migrate_is_idempotent(store, worker_env):
    result = errortriage(worker_env, "migrate")
    assert result.returncode == 0, result.stderr
    assert "schema is up to date" in result.stdout


def test_placeholder_key_rejected(worker_env):
    env = dict(worker_env, LLM_API_KEY="YOUR_HOLYSHEEP_API_KEY")
    result = errortriage(env, "settings")
    assert result.returncode == 1
    assert "LLM_API_KEY" in result.stderr
    assert "placeholder" in result.stderr


def test_settings_masks_key(worker_env):
    env = dict(worker_env, LLM_API_KEY="sk-live-abcdefghijklmnopqrstuvwxyz")
    result = errortriage(env, "settings")
    assert result.returncode == 0, result.stderr
    assert "sk-live-abcdefghijklmnopqrstuvwxyz" not in result.stdout
    assert "sk-l...wxyz" in result.stdout


def test_dead_letters_lists_rejected_payload(store, worker_env, redis_url, start_worker):
    from celery import Celery

    empty = errortriage(worker_env, "dead-letters", "--check")
    assert empty.returncode == 0, empty.stderr
    assert "0 dead letters" in empty.stdout

    start_worker()
    producer = Celery(set_as_current=False, broker=redis_url)
    producer.send_task("errortriage.ingest_event", args=[{"v": 1, "event_id": "not hex!", "context": {}}], queue="bulk")
    wait_for(lambda: store.fetchone("count_dead_letters")["total"] == 1, message="dead letter row")

    result = errortriage(worker_env, "dead-letters", "--payload", "--check")

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1 dead letters"
    assert lines[1].startswith("#1 ")
    assert "event_id" in lines[1]
    assert '"not hex!"' in lines[2]
