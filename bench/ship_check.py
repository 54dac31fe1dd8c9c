"""Is the variant `run` shipped the fastest within the gate in an independent timing?

Reads a folder of bench/ship_choice_cpu.sh (report.json: the run's validation; recommendation.json:
what it shipped; independent-bench.json: a later bench of the same files on real-length held-out
batches; several such files: their medians) and prints a table: each variant that passed the gate, its sequences/s in the independent
timing (geometric mean over the real batch sizes), and the verdict (shipped within 10% of the
fastest, or not).

    python bench/ship_check.py bench/results/ship-choice-cpu/<date>-<machine>-snips
"""

import json
import math
import statistics
import sys
from pathlib import Path


def main(folder: Path) -> None:
    run = json.loads((folder / "report.json").read_text())
    shipped = json.loads((folder / "recommendation.json").read_text())
    timings = [json.loads(path.read_text()) for path in sorted(folder.glob("independent-bench*.json"))]
    independent = timings[0]
    passed = {v["variant"] for v in run["validation"]["variants"] if v["passed"]}
    per_run: dict[str, list[float]] = {}  # each timing's geometric mean over the real batch sizes
    for timing in timings:
        rates: dict[str, list[float]] = {}
        for m in timing["measurements"]:
            if m["lengths"] == "real":
                rates.setdefault(m["variant"], []).append(m["sequences_per_second"])
        for v, r in rates.items():
            per_run.setdefault(v, []).append(math.exp(sum(map(math.log, r)) / len(r)))
    rate = {v: statistics.median(r) for v, r in per_run.items()}  # the median over the timings
    fastest = max((v for v in rate if v in passed), key=rate.get)
    print(
        f"CPU: {independent['machine'].get('cpu')}; shipped by run: **{shipped['variant']}**; "
        f"fastest within the gate in the independent timing: **{fastest}**.\n"
    )
    print("| variant | gate | run's seq/s (real lengths) | independent seq/s (real lengths) |")
    print("|---|---|---|---|")
    for v in sorted(rate, key=rate.get, reverse=True):
        gate = (
            "pass" if v in passed else ("fail" if v in {x["variant"] for x in run["validation"]["variants"]} else "-")
        )
        measured = shipped["sequences_per_s"].get(v) or shipped.get("first_look", {}).get(v)  # finalists: 2nd look
        print(f"| {v} | {gate} | {'-' if measured is None else f'{measured:.0f}'} | {rate[v]:.0f} |")
    ratio = rate[shipped["variant"]] / rate[fastest]
    verdict = "within 10%" if ratio >= 0.9 else "NOT within 10%"
    print(f"\nShipped / fastest within the gate, independent timing: {ratio:.3f} ({verdict}).")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
