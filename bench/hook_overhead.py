"""Question 1: what does the hook add to sentry_sdk.capture_exception() on the app's thread?

Each configuration runs in its own subprocess, because sentry-sdk sets up an
Integration once per process. The SDK's own sending is the same everywhere: a
Transport that drops envelopes. Two loops per configuration:

- burst: captures back to back, the worst case for the hook's threads, which
  compete with the app thread for the GIL;
- paced: one capture every 10 ms, an app with a high but steady error rate.

    python -m bench.hook_overhead [--quick]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import NO_ENV_FILE, ROOT, RedisServer, _die_with_parent, free_port, percentile

CONFIGS = {
    "none": "no hook",
    "ours_up": "our hook, Redis up",
    "ours_refused": "our hook, Redis refusing connections",
    "ours_frozen": "our hook, Redis frozen (SIGSTOP)",
    "naive_up": "naive hook (send_task inline), Redis up",
    "naive_refused": "naive hook, Redis refusing connections",
    "naive_frozen": "naive hook, Redis frozen (SIGSTOP)",
}
TARGET_ADDED_P99_US = 50.0
PACE_SECONDS = 0.01  # 100 errors a second: high, but an app still serving


# -- the child: one configuration per process ----------------------------------

def _naive_before_send(settings):
    """The obvious design: extract, scrub and publish inline, in before_send."""
    from celery import Celery

    from classifier.context import extract_context
    from config.celeryconfig import INGEST_TASK, producer_config
    from tasks.payload import build_payload

    app = Celery("naive-hook", set_as_current=False)
    app.conf.update(producer_config(settings))
    # The same single short connect attempt as the hook's producer, so the two
    # differ only in where the publish runs (kombu's default retries take ~6 s).
    app.conf.broker_transport_options = dict(app.conf.broker_transport_options, max_retries=0)
    app.conf.broker_connection_timeout = settings.broker_socket_timeout_seconds

    def before_send(event, hint):
        try:
            payload = build_payload(extract_context(event), settings.max_context_bytes, "naive")
            app.send_task(INGEST_TASK, args=[payload], queue=settings.bulk_queue, retry=False)
        except Exception:
            pass  # a naive hook still must not break the app
        return event

    return before_send


def _raise_from_handler(number: int):
    # A few frames deep, like an error raised in a view calling a client.
    def client_call():
        raise ConnectionError(f"upstream refused order {number} on 10.0.0.{number % 250}:8443")

    def view():
        client_call()

    view()


def _time_captures(count: int, pace: float) -> list:
    import sentry_sdk

    samples = []
    next_start = time.perf_counter()
    for number in range(count):
        if pace:
            next_start += pace
            delay = next_start - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        try:
            _raise_from_handler(number)
        except ConnectionError as error:
            started = time.perf_counter_ns()
            sentry_sdk.capture_exception(error)
            samples.append(time.perf_counter_ns() - started)
    return samples


def run_child(config: str, redis_url: str, warmup: int, count: int, paced_count: int, out: Path) -> None:
    import sentry_sdk
    from sentry_sdk.transport import Transport

    from config import load_settings

    class DropEnvelopes(Transport):
        """The SDK's sending, minus the network: identical in every configuration."""

        def capture_envelope(self, envelope):
            return None

    spool_dir = tempfile.mkdtemp(prefix="errortriage-bench-spool-")
    settings = load_settings({"REDIS_URL": redis_url, "SPOOL_DIR": spool_dir, "ERRORTRIAGE_ENV_FILE": NO_ENV_FILE})
    options = {"dsn": "http://public@127.0.0.1:9/1", "transport": DropEnvelopes, "traces_sample_rate": None}
    if config.startswith("ours"):
        from tasks.hook import ErrortriageIntegration

        options["integrations"] = [ErrortriageIntegration(settings)]
    elif config.startswith("naive"):
        options["before_send"] = _naive_before_send(settings)
    sentry_sdk.init(**options)

    _time_captures(warmup, 0.0)
    burst = _time_captures(count, 0.0)
    paced = _time_captures(paced_count, PACE_SECONDS) if paced_count else []
    result = {"config": config, "burst_ns": burst, "paced_ns": paced}
    if config.startswith("ours"):
        from tasks.hook import hook_counters

        result["counters"] = {name: value for name, value in hook_counters().items() if value}
        result["spooled_files"] = len(os.listdir(spool_dir))
    out.write_text(json.dumps(result))
    # Leave at once: the hook's exit flush may wait for a frozen broker, which is not what we time.
    os._exit(0)


# -- the parent -----------------------------------------------------------------

def _summary(samples_ns: list) -> dict:
    micro = [value / 1000 for value in samples_ns]
    return {"n": len(micro), "p50_us": percentile(micro, 0.50), "p99_us": percentile(micro, 0.99),
            "max_us": max(micro) if micro else float("nan")}


def _counts(quick: bool, config: str) -> tuple:
    """Return (warm-up, burst captures, paced captures) of a configuration."""
    if config == "naive_frozen":
        return (0, 2, 0)  # each capture waits out the 2 s socket timeout
    if config == "naive_refused":
        return (20, 200, 0) if quick else (50, 1000, 0)
    return (100, 500, 100) if quick else (300, 1000, 300)


def _run_child(redis: RedisServer, refused_url: str, config: str, quick: bool) -> dict:
    warmup, count, paced = _counts(quick, config)
    url = refused_url if config.endswith("refused") else redis.url(0)
    if config.endswith("frozen"):
        redis.freeze()
    try:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [sys.executable, "-m", "bench.hook_overhead", "--child", config, "--redis-url", url,
                       "--warmup", str(warmup), "--count", str(count), "--paced", str(paced), "--out", out.name]
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=300, preexec_fn=_die_with_parent())
            return json.loads(Path(out.name).read_text())
    finally:
        if config.endswith("frozen"):
            redis.thaw()


def _median(values: list) -> float:
    values = [value for value in values if value == value]  # NaN: a mode the configuration skipped
    return statistics.median(values) if values else float("nan")


def run(quick: bool = False, log=print) -> dict:
    """Run every configuration once per round; report medians over rounds.

    The machine is shared, so each round measures the baseline right next to
    the others and the added latency is taken within a round.
    """
    rounds = 1 if quick else 3
    redis = RedisServer("hook").start()
    refused_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    per_round = {config: [] for config in CONFIGS}
    extras = {}
    try:
        for round_number in range(rounds):
            for config in CONFIGS:
                if config == "naive_frozen" and round_number:
                    continue  # seconds per capture: one round says it all
                started = time.monotonic()
                data = _run_child(redis, refused_url, config, quick)
                line = {"burst": _summary(data["burst_ns"]), "paced": _summary(data["paced_ns"])}
                per_round[config].append(line)
                extras.setdefault(config, []).append({"counters": data.get("counters"),
                                                      "spooled_files": data.get("spooled_files")})
                redis_flush(redis)
                log(f"hook round {round_number + 1} {config:14s} "
                    f"burst p50={line['burst']['p50_us']:.0f}us p99={line['burst']['p99_us']:.0f}us "
                    f"paced p50={line['paced']['p50_us']:.0f}us p99={line['paced']['p99_us']:.0f}us "
                    f"counters={data.get('counters')} ({time.monotonic() - started:.1f}s)")
    finally:
        redis.stop()

    results = {}
    for config, lines in per_round.items():
        entry = {"label": CONFIGS[config], "rounds": len(lines), "per_round": lines, "extras": extras.get(config)}
        for mode in ("burst", "paced"):
            entry[mode] = {"n": sum(line[mode]["n"] for line in lines)}
            for key in ("p50_us", "p99_us"):
                values = [line[mode][key] for line in lines]
                entry[mode][key] = _median(values)
                if config != "naive_frozen":
                    added = [line[mode][key] - base[mode][key] for line, base in zip(lines, per_round["none"])]
                    entry[mode]["added_" + key] = _median(added)
        results[config] = entry
    verdicts = {}
    for config in ("ours_up", "ours_refused", "ours_frozen"):
        verdicts[config] = {mode: results[config][mode]["added_p99_us"] <= TARGET_ADDED_P99_US
                            for mode in ("burst", "paced")}
    return {"rounds": rounds, "configs": results, "target_added_p99_us": TARGET_ADDED_P99_US, "met": verdicts}


def redis_flush(redis: RedisServer) -> None:
    """Empty the benchmark's Redis, so queued events of one configuration do not slow the next."""
    import redis as redis_client

    client = redis_client.Redis.from_url(redis.url(0))
    client.flushall()
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer captures: a smoke run")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--paced", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.redis_url, args.warmup, args.count, args.paced, args.out)
        return
    print(json.dumps(run(args.quick), indent=2, default=str))


if __name__ == "__main__":
    main()
