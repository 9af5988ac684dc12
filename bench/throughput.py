"""Question 2: how many events per second do bulk workers store and classify, and how fast?

Everything runs on loopback: a redis-server of the benchmark's own, the
database errortriage_bench (created and dropped here), the loopback provider
from tests/support, and real `celery worker` processes.

Throughput is a drain rate: N events are published first, then the worker
starts and the rate is N / (last classified_at - first received_at), both
Postgres timestamps. The no-op baseline drains the same number of messages of
the same size through its own Celery app (bench/noop.py) with the workers'
configuration. Latency is measured separately on the same worker, with events
published at half the measured rate, from the publish time (carried in the
event id) to classified_at.

    python -m bench.throughput [--quick]
"""

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (NO_ENV_FILE, BenchDatabase, RedisServer, RssSampler, Worker, percentile, sent_at_seconds, sentry_event,
                          timed_event_id, worker_env, zipf_kinds)
from support.llm_stub import DEEP_REPLY, TRIAGE_REPLY, LLMStub, Reply, completion  # noqa: E402

CHARS_PER_TOKEN = 4  # an estimate for English text and JSON; the stub has no tokenizer
FINGERPRINTS = 300
RATIO_TARGET = 0.7


class CountingStub(LLMStub):
    """The loopback provider with a fixed latency, whose token counts grow with the prompt.

    The stub in tests/support reports 120 prompt tokens for any prompt. Here
    prompt and completion tokens are estimated as characters / 4, so a longer
    prompt costs more. Only counts are kept, not request bodies, so a long run
    does not grow the benchmark's own memory.
    """

    def __init__(self, delay: float = 0.0):
        super().__init__()
        self.delay = delay
        self.counts = {"bulk": 0, "deep": 0}
        self.prompt_chars = {"bulk": 0, "deep": 0}

    def record(self, path, headers, body) -> None:
        pass  # counted in next_reply, which sees the same body

    def next_reply(self, body) -> Reply:
        messages = body.get("messages") or [{}]
        tier = "deep" if "root_cause" in messages[0].get("content", "") else "bulk"
        chars = sum(len(message.get("content", "")) for message in messages)
        with self._lock:
            self.counts[tier] += 1
            self.prompt_chars[tier] += chars
        content = DEEP_REPLY if tier == "deep" else TRIAGE_REPLY
        body = completion(content, prompt_tokens=math.ceil(chars / CHARS_PER_TOKEN),
                          completion_tokens=math.ceil(len(json.dumps(content)) / CHARS_PER_TOKEN),
                          model=body.get("model", "stub-model"))
        return Reply(200, body, delay=self.delay)

    def reset_counts(self) -> None:
        with self._lock:
            self.counts = {"bulk": 0, "deep": 0}
            self.prompt_chars = {"bulk": 0, "deep": 0}


def contexts_for(kinds: list, first_number: int = 0) -> list:
    """Extract the hook's context of one event per kind, before any timing starts."""
    from classifier.context import extract_context

    return [extract_context(sentry_event(first_number + index, kind)) for index, kind in enumerate(kinds)]


def unique_kinds(count: int, offset: int = 0) -> list:
    return list(range(offset, offset + count))


def producer_for(redis_url: str):
    from config import load_settings
    from tasks.hook import Producer

    return Producer(load_settings({"REDIS_URL": redis_url, "ERRORTRIAGE_ENV_FILE": NO_ENV_FILE}), source="bench")


def publish(producer, contexts: list, sequence_start: int = 0, rate: float = 0.0) -> float:
    """Publish with the hook's Producer.publish, optionally at `rate` per second; return the publish rate."""
    started = time.monotonic()
    for index, context in enumerate(contexts):
        if rate:
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.publish(dict(context, event_id=timed_event_id(sequence_start + index)))
    return len(contexts) / max(time.monotonic() - started, 1e-9)


class Pipeline:
    """The benchmark's Redis, database and provider, shared by every run of one invocation."""

    def __init__(self, log=print):
        self.log = log
        self.redis = RedisServer("pipeline")
        self.database = BenchDatabase()
        self.stub = None

    def __enter__(self) -> "Pipeline":
        self.redis.start()
        self.database.create()
        self.stub = CountingStub().start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.stub is not None:
            self.stub.stop()
        self.redis.stop()
        self.database.drop()

    @property
    def redis_url(self) -> str:
        return self.redis.url(0)

    def reset(self) -> None:
        import redis as redis_client

        client = redis_client.Redis.from_url(self.redis_url)
        client.flushall()
        client.close()
        self.database.truncate()
        self.stub.reset_counts()

    def env(self, llm: bool = True, **extra) -> dict:
        if llm:
            extra.update(LLM_BASE_URL=self.stub.base_url, LLM_API_KEY=self.stub.api_key)
        return worker_env(self.redis_url, self.database.url, **extra)

    def counts(self) -> dict:
        return self.database.query("SELECT count(*) AS total, count(classified_at) AS classified FROM error_events")[0]

    def timing(self) -> dict:
        row = self.database.query(
            "SELECT count(classified_at) AS classified, extract(epoch FROM min(received_at)) AS first_received,"
            " extract(epoch FROM max(classified_at)) AS last_classified FROM error_events")[0]
        return {key: float(value) if value is not None else None for key, value in row.items()}

    def llm_totals(self) -> dict:
        rows = self.database.query(
            "SELECT tier, count(*) AS calls, coalesce(sum(prompt_tokens), 0) AS prompt_tokens,"
            " coalesce(sum(completion_tokens), 0) AS completion_tokens, coalesce(sum(cost_usd), 0) AS cost_usd"
            " FROM llm_calls GROUP BY tier")
        return {row["tier"]: {key: float(value) if key == "cost_usd" else int(value)
                              for key, value in row.items() if key != "tier"} for row in rows}

    def latencies(self, after_sequence: int) -> list:
        """Return capture-to-classified seconds of events published from sequence number `after_sequence` on."""
        rows = self.database.query("SELECT event_id, extract(epoch FROM classified_at) AS classified"
                                   " FROM error_events WHERE classified_at IS NOT NULL")
        return [float(row["classified"]) - sent_at_seconds(row["event_id"]) for row in rows
                if int(row["event_id"][16:], 16) >= after_sequence]

    def wait_classified(self, target: int, deadline: float, sampler=None, on_sample=None) -> int:
        classified = 0
        while time.monotonic() < deadline:
            classified = self.counts()["classified"]
            if sampler is not None:
                rss = sampler.sample()
                if on_sample:
                    on_sample(classified, rss)
            if classified >= target:
                break
            time.sleep(0.25)
        return classified


def run_noop(pipe: Pipeline, events: int, concurrency: int) -> dict:
    """Drain `events` no-op tasks carrying the pipeline's payloads; return the rate."""
    import redis as redis_client
    from celery import Celery

    from bench.noop import NOOP_TASK
    from config import load_settings
    from config.celeryconfig import producer_config

    pipe.reset()
    settings = load_settings({"REDIS_URL": pipe.redis_url, "ERRORTRIAGE_ENV_FILE": NO_ENV_FILE})
    sender = Celery("bench-noop-sender", set_as_current=False)
    sender.conf.update(producer_config(settings))
    producer = producer_for(pipe.redis_url)
    contexts = contexts_for(unique_kinds(events))
    started = time.monotonic()
    for index, context in enumerate(contexts):
        payload = producer.build(dict(context, event_id=timed_event_id(index)))
        sender.send_task(NOOP_TASK, args=[payload], queue=settings.bulk_queue)
    publish_rate = events / (time.monotonic() - started)

    client = redis_client.Redis.from_url(pipe.redis_url)
    worker = Worker("bench.noop", settings.bulk_queue, pipe.env(llm=False), concurrency, f"noop-c{concurrency}")
    sampler = None
    try:
        worker.start()
        sampler = RssSampler(worker.process.pid)
        first = last = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            waiting = client.llen(settings.bulk_queue)
            unacked = client.hlen("unacked")
            now = time.time()
            if first is None and waiting < events:
                first = now
            if waiting == 0 and unacked == 0:
                last = now
                break
            if int(now * 50) % 25 == 0:
                sampler.sample()
            time.sleep(0.02)
        sampler.sample()
    finally:
        worker.stop()
        client.close()
    rate = events / (last - first) if first and last and last > first else float("nan")
    return {"events": events, "concurrency": concurrency, "events_per_s": rate, "publish_per_s": publish_rate,
            "peak_rss_mib": {key: value / 2**20 for key, value in sampler.peak.items()} if sampler else None}


def run_pipeline(pipe: Pipeline, name: str, events: int, mix: str, delay: float, concurrency: int,
                 pool: str = "prefork", latency_seconds: float = 8.0, time_box: float = 300.0, seed: int = 11) -> dict:
    """Drain `events` through a bulk worker, then time capture-to-classified at half that rate."""
    pipe.reset()
    pipe.stub.delay = delay
    if mix == "unique":
        kinds = unique_kinds(events)
    else:
        kinds = zipf_kinds(events, FINGERPRINTS, seed)
    producer = producer_for(pipe.redis_url)
    publish_rate = publish(producer, contexts_for(kinds))

    worker = Worker("tasks.app", "bulk", pipe.env(), concurrency, f"{name}-{pool}-c{concurrency}", pool=pool)
    result = {"name": name, "events": events, "mix": mix, "llm_delay_ms": int(delay * 1000),
              "concurrency": concurrency, "pool": pool, "publish_per_s": publish_rate}
    try:
        worker.start()
        worker.wait_ready(timeout=60)
        sampler = RssSampler(worker.process.pid)
        trend = [{"classified": 0, **sampler.sample()}]

        def keep_trend(classified_now, rss):
            if classified_now - trend[-1]["classified"] >= max(1, events // 10):
                trend.append({"classified": classified_now, **rss})

        classified = pipe.wait_classified(events, time.monotonic() + time_box, sampler, keep_trend)
        trend.append({"classified": classified, **sampler.sample()})
        result["rss_trend_mib"] = [{"classified": point["classified"], "main": point["main"] / 2**20,
                                    "max_child": point["max_child"] / 2**20, "total": point["total"] / 2**20}
                                   for point in trend]
        timing = pipe.timing()
        span = (timing["last_classified"] or 0) - (timing["first_received"] or 0)
        result.update(classified=classified, drained=classified >= events,
                      events_per_s=timing["classified"] / span if span > 0 else float("nan"),
                      llm=pipe.llm_totals(), stub_calls=dict(pipe.stub.counts))

        # Latency at half the drain rate: events find an idle worker, as in normal operation.
        rate = max(1.0, result["events_per_s"] / 2) if result["events_per_s"] == result["events_per_s"] else 1.0
        count = max(10, int(rate * latency_seconds))
        if mix == "unique":
            more = unique_kinds(count, offset=events)
        else:
            more = zipf_kinds(count, FINGERPRINTS, seed + 1)
        publish(producer, contexts_for(more, first_number=events), sequence_start=events, rate=rate)
        pipe.wait_classified(classified + count, time.monotonic() + max(30.0, latency_seconds * 3), sampler)
        latencies = pipe.latencies(after_sequence=events)
        result["latency"] = {"rate_per_s": rate, "events": count, "measured": len(latencies),
                             "p50_ms": percentile(latencies, 0.5) * 1000, "p95_ms": percentile(latencies, 0.95) * 1000}
        result["peak_rss_mib"] = {key: value / 2**20 for key, value in sampler.peak.items()}
    finally:
        worker.stop()
    return result


def run_memory(pipe: Pipeline, events: int, concurrency: int, log=print) -> dict:
    """Publish `events` while a rules-only worker consumes them; sample the worker's RSS on the way."""
    pipe.reset()
    worker = Worker("tasks.app", "bulk", pipe.env(llm=False), concurrency, f"memory-c{concurrency}")
    samples = []
    publisher_error = []
    started = time.monotonic()
    try:
        worker.start()
        worker.wait_ready(timeout=60)
        sampler = RssSampler(worker.process.pid)
        samples.append({"classified": 0, "seconds": 0.0, **sampler.sample()})

        def publish_all():
            try:
                producer = producer_for(pipe.redis_url)
                batch = 5000
                for start in range(0, events, batch):
                    kinds = zipf_kinds(min(batch, events - start), FINGERPRINTS, seed=start)
                    publish(producer, contexts_for(kinds, first_number=start), sequence_start=start)
            except Exception as error:  # reported in the result, not lost in a thread
                publisher_error.append(repr(error))

        thread = threading.Thread(target=publish_all, daemon=True)
        thread.start()
        next_sample = [time.monotonic() + 5]

        def on_sample(classified, rss):
            if time.monotonic() >= next_sample[0]:
                next_sample[0] += 5
                samples.append({"classified": classified, "seconds": round(time.monotonic() - started, 1), **rss})

        classified = pipe.wait_classified(events, started + 540, sampler, on_sample)
        samples.append({"classified": classified, "seconds": round(time.monotonic() - started, 1),
                        **sampler.sample()})
        thread.join(timeout=5)
    finally:
        worker.stop()
    timing = pipe.timing()
    span = (timing["last_classified"] or 0) - (timing["first_received"] or 0)
    middle = min(samples, key=lambda sample: abs(sample["classified"] - events / 2))
    pick = {"start": samples[0], "middle": middle, "end": samples[-1]}
    return {"events": events, "classified": classified, "concurrency": concurrency,
            "events_per_s": timing["classified"] / span if span > 0 else float("nan"),
            "points": {name: {"classified": point["classified"], "main_mib": point["main"] / 2**20,
                              "max_child_mib": point["max_child"] / 2**20, "total_mib": point["total"] / 2**20}
                       for name, point in pick.items()},
            "samples": samples, "publisher_error": publisher_error}


def plan(quick: bool) -> dict:
    """Event counts that keep `make bench` under 10 minutes on 2 busy cores (about 100 events/s)."""
    if quick:
        return {"noop_events": 500, "concurrency": 2, "runs": [("zipf", 0.0, 500), ("unique", 0.0, 300),
                ("unique", 0.3, 20), ("zipf", 0.3, 300)], "sweep": [2], "threads": [], "sweep_window": 3.0,
                "latency_seconds": 2.0}
    return {"noop_events": 20000, "concurrency": 2, "runs": [("zipf", 0.0, 20000), ("unique", 0.0, 2000),
            ("unique", 0.3, 100), ("zipf", 0.3, 1000)], "sweep": [1, 2, 4, 8, 16], "threads": [16],
            "sweep_window": 4.0, "latency_seconds": 5.0}


def run(pipe: Pipeline, quick: bool = False, log=print) -> dict:
    settings = plan(quick)
    concurrency = settings["concurrency"]
    out = {"plan": settings, "runs": [], "sweep": []}
    out["noop"] = run_noop(pipe, settings["noop_events"], concurrency)
    log(f"noop c={concurrency}: {out['noop']['events_per_s']:.0f} tasks/s")
    for mix, delay, count in settings["runs"]:
        line = run_pipeline(pipe, f"{mix}-{int(delay * 1000)}ms", count, mix, delay, concurrency,
                            latency_seconds=settings["latency_seconds"])
        out["runs"].append(line)
        log(f"pipeline {line['name']} c={concurrency}: {line['events_per_s']:.1f} events/s "
            f"({line['classified']}/{line['events']}) latency p50={line['latency']['p50_ms']:.0f}ms "
            f"p95={line['latency']['p95_ms']:.0f}ms peak rss={line['peak_rss_mib']}")
    window = settings["sweep_window"]
    for pool, levels in (("prefork", settings["sweep"]), ("threads", settings["threads"])):
        for level in levels:
            count = max(10, int(level / 0.3 * window))
            line = run_pipeline(pipe, "sweep-300ms", count, "unique", 0.3, level, pool=pool,
                                latency_seconds=0.0, time_box=window * 4 + 20)
            out["sweep"].append(line)
            log(f"sweep 300ms {pool} c={level}: {line['events_per_s']:.1f} events/s "
                f"({line['classified']}/{line['events']}) peak rss={line['peak_rss_mib']}")
    zero = [line for line in out["runs"] if line["llm_delay_ms"] == 0]
    out["ratio_to_noop"] = {line["name"]: line["events_per_s"] / out["noop"]["events_per_s"] for line in zero}
    out["ratio_met"] = {name: ratio >= RATIO_TARGET for name, ratio in out["ratio_to_noop"].items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--memory-events", type=int, default=0,
                        help="instead: publish this many events to a rules-only worker and sample its memory")
    args = parser.parse_args()
    with Pipeline() as pipe:
        if args.memory_events:
            result = run_memory(pipe, args.memory_events, plan(args.quick)["concurrency"])
        else:
            result = run(pipe, args.quick)
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
