"""Question 3: how many provider calls and tokens does classifying once per fingerprint save?

Ours: events drawn from a Zipf law over 300 fingerprints go through the real
pipeline (bulk and deep workers, provider at 0 ms). Calls, tokens and cost come
from the llm_calls rows. Naive: the same events, each classified by one call
of classifier.llm.LLMClient.classify against the same stub, counted the same
way (the usage the stub reports). Token counts are estimates (characters / 4,
see bench.throughput.CountingStub), identical for both designs.

    python -m bench.llm_efficiency [--quick]
"""

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import NO_ENV_FILE, Worker, timed_event_id, zipf_kinds
from bench.throughput import FINGERPRINTS, Pipeline, contexts_for, producer_for, publish

TARGET_TOKEN_RATIO = 30.0
SEED = 23


def run(pipe: Pipeline, quick: bool = False, log=print) -> dict:
    from classifier.llm import LLMClient
    from classifier.scrub import scrub_value
    from config import load_settings

    events = 1000 if quick else 10000
    defaults = load_settings({"ERRORTRIAGE_ENV_FILE": NO_ENV_FILE})  # default models and prices
    contexts = contexts_for(zipf_kinds(events, FINGERPRINTS, SEED))

    # Ours: the pipeline, with a deep worker so deep calls are counted too.
    pipe.reset()
    pipe.stub.delay = 0.0
    producer = producer_for(pipe.redis_url)
    publish(producer, contexts)
    bulk = Worker("tasks.app", "bulk", pipe.env(), 2, "efficiency-bulk")
    deep = Worker("tasks.app", "deep", pipe.env(), 1, "efficiency-deep")
    started = time.monotonic()
    try:
        bulk.start()
        deep.start()
        bulk.wait_ready(timeout=60)
        deep.wait_ready(timeout=60)
        classified = pipe.wait_classified(events, time.monotonic() + 400)
        # Deep analysis of the last fingerprints may still be running.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pending = pipe.database.query("SELECT count(*) AS n FROM error_events WHERE deep_status = 'queued'")
            if pending[0]["n"] == 0:
                break
            time.sleep(0.25)
    finally:
        bulk.stop()
        deep.stop()
    ours_rows = pipe.llm_totals()
    fingerprints = pipe.database.query("SELECT count(*) AS n FROM fingerprints")[0]["n"]
    inherited = pipe.database.query("SELECT count(*) AS n FROM error_events WHERE inherited")[0]["n"]
    ours = {"events": events, "classified": classified, "fingerprints": fingerprints, "inherited": inherited,
            "seconds": round(time.monotonic() - started, 1), "by_tier": ours_rows, "stub_calls": dict(pipe.stub.counts)}
    ours["calls"] = sum(tier["calls"] for tier in ours_rows.values())
    ours["prompt_tokens"] = sum(tier["prompt_tokens"] for tier in ours_rows.values())
    ours["completion_tokens"] = sum(tier["completion_tokens"] for tier in ours_rows.values())
    ours["cost_usd"] = sum(tier["cost_usd"] for tier in ours_rows.values())
    log(f"efficiency ours: {ours['calls']} calls, {ours['prompt_tokens']}+{ours['completion_tokens']} tokens, "
        f"${ours['cost_usd']:.4f} for {classified} events")

    # Naive: one bulk call per event, same scrubbed payload, same stub and counter.
    pipe.stub.reset_counts()
    client = LLMClient(pipe.stub.base_url, pipe.stub.api_key, defaults.llm_timeout_seconds, defaults.llm_max_tokens)
    naive = {"events": events, "calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    started = time.monotonic()
    for index, context in enumerate(contexts):
        payload = producer.build(dict(context, event_id=timed_event_id(index)))
        result = client.classify(scrub_value(payload["context"]), defaults.bulk_model)
        naive["calls"] += 1
        naive["prompt_tokens"] += result.usage.prompt_tokens
        naive["completion_tokens"] += result.usage.completion_tokens
        naive["cost_usd"] += defaults.cost_usd(defaults.bulk_model, result.usage.prompt_tokens,
                                               result.usage.completion_tokens)
    naive["seconds"] = round(time.monotonic() - started, 1)
    naive["stub_calls"] = dict(pipe.stub.counts)
    log(f"efficiency naive: {naive['calls']} calls, {naive['prompt_tokens']}+{naive['completion_tokens']} tokens, "
        f"${naive['cost_usd']:.4f}")

    ours_tokens = ours["prompt_tokens"] + ours["completion_tokens"]
    naive_tokens = naive["prompt_tokens"] + naive["completion_tokens"]
    ratio = naive_tokens / ours_tokens if ours_tokens else float("inf")
    return {"ours": ours, "naive": naive, "token_ratio": ratio, "call_ratio": naive["calls"] / max(1, ours["calls"]),
            "target_token_ratio": TARGET_TOKEN_RATIO, "met": ratio >= TARGET_TOKEN_RATIO,
            "prices_usd_per_mtok": {model: defaults.llm_prices_usd_per_mtok[model]
                                    for model in (defaults.bulk_model, defaults.deep_model)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 events instead of 10,000")
    args = parser.parse_args()
    with Pipeline() as pipe:
        print(json.dumps(run(pipe, args.quick), indent=2, default=str))


if __name__ == "__main__":
    main()
