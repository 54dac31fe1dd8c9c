"""The tables docs/serving.md shows, from a serve-bench JSON report:
served against in-process per closed-loop level, and the search's verdict.

    python bench/serve_bench_table.py bench/results/serving-cpu/<run>/serve-bench.json
"""

import json
import sys

from nlu_deploy.serving.load_report import in_process_key
from nlu_deploy.serving.repository import TritonOptions


def level_rows(report: dict) -> list[str]:
    ensemble, in_process = report["ensemble"], report["in_process_sequences_per_s"]
    rows = [
        "| configuration | level | req/s | p99 ms | model batch | in-process seq/s at that batch | served / in-process "
        "| model queue / compute ms | client cores | differ / checked |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for configuration in report["configurations"]:
        for level in configuration["levels"]:
            if level["level"]["kind"] != "concurrency":
                continue
            model = level["server"].get(f"{ensemble}_model", {})
            batch = model.get("average_batch") or 1.0
            buckets = (configuration["options"] or {}).get("length_buckets", TritonOptions().length_buckets)
            seqs = in_process.get(in_process_key(batch, buckets))
            kept = f"{100 * level['requests_per_s'] / seqs:.0f}%" if seqs else "-"
            rows.append(
                f"| {configuration['name']} | {level['level']['label']} | {level['requests_per_s']:.0f} "
                f"| {level['p99_ms']:.1f} | {batch:.1f} | {seqs:.0f} | {kept} "
                f"| {model.get('queue_ms', 0):.1f} / {model.get('compute_ms', 0):.1f} "
                f"| {level.get('client_cores') or 0:.2f} | {level['wrong_answers']} / {level['checked']} |"
            )
    return rows


def search_rows(report: dict) -> list[str]:
    choice = report.get("choice") or {}
    rows = ["| candidate | req/s (median) | p99 ms (median) | runs |", "|---|---|---|---|"]
    summaries = choice.get("summaries", {})
    for index in choice.get("finalists", []):
        summary = summaries[str(index)]
        mark = " (chosen)" if index == choice.get("chosen") else ""
        rows.append(
            f"| {report['candidates'][index]['settings']}{mark} | {summary['requests_per_s']:.0f} "
            f"| {summary['p99_ms']:.1f} | {summary['runs']} |"
        )
    return rows + ["", choice.get("why", "")]


if __name__ == "__main__":
    data = json.loads(open(sys.argv[1], encoding="utf-8").read())
    print("\n".join(level_rows(data)))
    print()
    print("\n".join(search_rows(data)))
