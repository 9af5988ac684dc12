"""Render the results of bench.run as the Markdown tables of BENCHMARKS.md."""


def _number(value, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def _yes(flag: bool) -> str:
    return "met" if flag else "missed"


def render(results: dict) -> str:
    box = results["machine"]
    lines = [
        f"Command: `{results['command']}`, run on {box['date']} in {results.get('seconds', 'n/a')} s.",
        f"Machine: {box['nproc']} cores (`nproc`), {box['cpu_model']}, {box['memory_gib']} GiB; "
        f"load average at start {', '.join(f'{value:.2f}' for value in box['load_average_at_start'])}; "
        f"Python {box['python']}, Celery {box['celery']}, sentry-sdk {box['sentry_sdk']}.",
        "",
    ]
    lines += _hook(results["hook"])
    lines += _throughput(results["throughput"])
    lines += _efficiency(results["efficiency"])
    return "\n".join(lines)


def _hook(hook: dict) -> list:
    target = hook["target_added_p99_us"]
    lines = [
        f"### 1. Hook overhead on `capture_exception()` (median of {hook['rounds']} rounds)",
        "",
        "| configuration | burst p50 µs | burst p99 µs | added p99 µs (burst) | paced p50 µs | paced p99 µs "
        "| added p99 µs (paced) | hook counters (last round) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for config, line in hook["configs"].items():
        burst, paced = line["burst"], line["paced"]
        counters = (line.get("extras") or [{}])[-1].get("counters")
        counters = ", ".join(f"{name}={value}" for name, value in (counters or {}).items()) or "-"
        lines.append(
            f"| {line['label']} | {_number(burst['p50_us'])} | {_number(burst['p99_us'])} "
            f"| {_number(burst.get('added_p99_us'))} | {_number(paced['p50_us'])} | {_number(paced['p99_us'])} "
            f"| {_number(paced.get('added_p99_us'))} | {counters} |")
    lines.append("")
    for config, verdict in hook["met"].items():
        added = hook["configs"][config]
        lines.append(f"- Target (ours adds at most {target:.0f} µs at p99), {hook['configs'][config]['label']}: "
                     f"burst {_yes(verdict['burst'])} ({_number(added['burst']['added_p99_us'])} µs), "
                     f"paced {_yes(verdict['paced'])} ({_number(added['paced']['added_p99_us'])} µs).")
    lines.append("")
    return lines


def _throughput(data: dict) -> list:
    noop = data["noop"]
    lines = [
        "### 2. Pipeline throughput",
        "",
        f"No-op baseline (bench/noop.py, same broker and worker settings, prefork -c {noop['concurrency']}): "
        f"**{_number(noop['events_per_s'])} tasks/s** over {noop['events']:,} tasks "
        f"(published at {_number(noop['publish_per_s'])}/s before the worker started).",
        "",
        "| run | events | provider latency | pool, -c | events/s | x no-op | latency p50 ms | latency p95 ms "
        "| latency measured at | peak RSS MiB: main / largest child / tree | LLM calls (bulk) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for line in data["runs"]:
        rss = line.get("peak_rss_mib") or {}
        latency = line.get("latency") or {}
        calls = (line.get("llm") or {}).get("bulk", {}).get("calls", 0)
        lines.append(
            f"| {line['mix']} | {line['classified']:,}/{line['events']:,} | {line['llm_delay_ms']} ms "
            f"| {line['pool']}, {line['concurrency']} | {_number(line['events_per_s'], 1)} "
            f"| {_number(line['events_per_s'] / noop['events_per_s'], 2)} | {_number(latency.get('p50_ms'))} "
            f"| {_number(latency.get('p95_ms'))} | {latency.get('measured', 0)} events at "
            f"{_number(latency.get('rate_per_s'), 1)}/s | {_number(rss.get('main'))} / {_number(rss.get('max_child'))} "
            f"/ {_number(rss.get('total'))} | {calls:,} |")
    lines += [
        "",
        "Concurrency at 300 ms provider latency, unique fingerprints (every event needs a call):",
        "",
        "| pool | -c | events | events/s | events/s per process | peak RSS MiB (tree) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for line in data["sweep"]:
        rss = line.get("peak_rss_mib") or {}
        lines.append(f"| {line['pool']} | {line['concurrency']} | {line['classified']:,}/{line['events']:,} "
                     f"| {_number(line['events_per_s'], 1)} | {_number(line['events_per_s'] / line['concurrency'], 2)} "
                     f"| {_number(rss.get('total'))} |")
    lines.append("")
    for name, ratio in data["ratio_to_noop"].items():
        lines.append(f"- Target (at least 0.7x the no-op rate at 0 ms), {name}: {_yes(ratio >= 0.7)} "
                     f"({ratio:.2f}x).")
    headline = next((line for line in data["runs"] if line.get("rss_trend_mib") and line["events"] >= 10000), None)
    if headline:
        lines += ["", f"Worker memory during the {headline['events']:,}-event {headline['name']} run "
                      "(MiB; main process / largest pool child / whole tree):", "",
                  "| classified | main | largest child | tree |", "|---:|---:|---:|---:|"]
        for point in headline["rss_trend_mib"]:
            lines.append(f"| {point['classified']:,} | {_number(point['main'], 1)} | {_number(point['max_child'], 1)} "
                         f"| {_number(point['total'], 1)} |")
    lines.append("")
    return lines


def _efficiency(data: dict) -> list:
    ours, naive = data["ours"], data["naive"]
    prices = ", ".join(f"{model} ${price}/MTok" for model, price in data["prices_usd_per_mtok"].items())
    lines = [
        f"### 3. LLM efficiency ({ours['events']:,} events, Zipf over {ours['fingerprints']} fingerprints seen)",
        "",
        "| design | calls | prompt tokens | completion tokens | cost USD |",
        "|---|---:|---:|---:|---:|",
    ]
    for tier, row in sorted(ours["by_tier"].items()):
        lines.append(f"| ours, {tier} tier | {row['calls']:,} | {row['prompt_tokens']:,} | {row['completion_tokens']:,} "
                     f"| {row['cost_usd']:.4f} |")
    lines.append(f"| **ours, total** | {ours['calls']:,} | {ours['prompt_tokens']:,} | {ours['completion_tokens']:,} "
                 f"| {ours['cost_usd']:.4f} |")
    lines.append(f"| naive, one bulk call per event | {naive['calls']:,} | {naive['prompt_tokens']:,} "
                 f"| {naive['completion_tokens']:,} | {naive['cost_usd']:.4f} |")
    lines += [
        "",
        f"Prices: {prices} (the defaults). Tokens are the stub's estimate (characters / 4) for both designs. "
        f"{ours['inherited']:,} of {ours['classified']:,} events inherited their fingerprint's classification.",
        "",
        f"- Target (at least {data['target_token_ratio']:.0f}x fewer tokens): {_yes(data['met'])} "
        f"({data['token_ratio']:.1f}x fewer tokens, {data['call_ratio']:.1f}x fewer calls, deep calls included "
        "on our side only).",
        "",
    ]
    return lines
