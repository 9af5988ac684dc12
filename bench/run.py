"""Run the three benchmarks and write their tables to BENCHMARKS.md.

    python -m bench.run           # the full run behind BENCHMARKS.md, under 10 minutes on 2 cores
    python -m bench.run --quick   # a smoke run of a minute or two; prints tables, judges nothing

Raw results go to .errortriage/bench/results[-quick].json. Only the full run
rewrites the part of BENCHMARKS.md between the two `results` markers.
"""

import argparse
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import hook_overhead, llm_efficiency, throughput
from bench.common import ROOT, STATE_DIR, machine, write_json
from bench.report import render

START_MARKER = "<!-- results:start -->"
END_MARKER = "<!-- results:end -->"
# Hard stops: every child and server is stopped by the finally blocks this alarm unwinds through.
TIME_LIMIT_SECONDS = {True: 420, False: 900}


class OutOfTime(Exception):
    pass


def _on_alarm(signum, frame):
    raise OutOfTime("benchmark time limit reached")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts; for CI, which must not judge timings")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(TIME_LIMIT_SECONDS[args.quick])
    command = "make bench-quick" if args.quick else "make bench"
    results = {"command": command, "machine": machine()}
    started = time.monotonic()
    try:
        results["hook"] = hook_overhead.run(args.quick, log)
        with throughput.Pipeline(log) as pipe:
            results["throughput"] = throughput.run(pipe, args.quick, log)
            results["efficiency"] = llm_efficiency.run(pipe, args.quick, log)
    finally:
        signal.alarm(0)
    results["seconds"] = round(time.monotonic() - started, 1)
    raw = STATE_DIR / ("results-quick.json" if args.quick else "results.json")
    write_json(raw, results)
    tables = render(results)
    print(tables)
    log(f"done in {results['seconds']}s; raw results in {raw}")
    if not args.quick:
        path = ROOT / "BENCHMARKS.md"
        text = path.read_text() if path.exists() else f"# Benchmarks\n\n{START_MARKER}\n{END_MARKER}\n"
        head, _, rest = text.partition(START_MARKER)
        _, _, tail = rest.partition(END_MARKER)
        path.write_text(f"{head}{START_MARKER}\n{tables}\n{END_MARKER}{tail}")
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
