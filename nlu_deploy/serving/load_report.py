"""serve-bench's report, drawn from its JSON: the markdown tables and the throughput-latency plot."""

from __future__ import annotations

from pathlib import Path

from nlu_deploy.serving.repository import TritonOptions


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def runner_window(level: dict, ensemble: str) -> dict:
    """The server's window for the model that runs the file: the ensemble's {name}_model step, or
    a single-process pipeline model itself."""
    server = level.get("server") or {}
    return server.get(f"{ensemble}_model") or server.get(ensemble) or {}


def _model_cells(level: dict, ensemble: str) -> tuple[str, str]:
    """(the ONNX model's executed batch, queue/compute ms per request of each ensemble step)."""
    server = level.get("server") or {}
    model = runner_window(level, ensemble)
    batch = "-" if model.get("average_batch") is None else f"{model['average_batch']:.1f}"
    steps = []
    pipeline = f"{ensemble}_model" not in server
    for name, window in server.items():
        if (name == ensemble and not pipeline) or not window.get("requests"):
            continue
        short = name.removeprefix(f"{ensemble}_")
        steps.append(f"{short} {_ms(window['queue_ms'])}/{_ms(window['compute_ms'])}")
    return batch, "; ".join(steps) or "-"


def in_process_key(batch: float, buckets) -> str:
    """The in-process measurement for an executed (average) batch size and a set of buckets."""
    return f"{max(1, round(batch))}/{'-'.join(map(str, buckets)) or 'none'}"


def _in_process_cells(level: dict, configuration: dict, in_process: dict, ensemble: str) -> tuple[str, str]:
    model = runner_window(level, ensemble)
    if not model.get("average_batch"):
        return "-", "-"
    buckets = (configuration.get("options") or {}).get("length_buckets", TritonOptions().length_buckets)
    seqs = in_process.get(in_process_key(model["average_batch"], buckets))
    if not seqs:
        return "-", "-"
    return f"{seqs:.0f}", f"{100 * level['requests_per_s'] / seqs:.0f}%"


def configuration_table(configuration: dict, in_process: dict, ensemble: str) -> str:
    header = (
        "| level | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | timeouts | differ | model batch "
        "| in-process seq/s at that batch | served / in-process | queue/compute ms per request | client cores |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for level in configuration["levels"]:
        batch, steps = _model_cells(level, ensemble)
        seqs, kept = _in_process_cells(level, configuration, in_process, ensemble)
        wrong = level["wrong_answers"] + level["crossed"]
        ties = level.get("near_ties", 0)
        rows.append(
            f"| {level['level']['label']} | {level['requests_per_s']:.1f} | {_ms(level['p50_ms'])} "
            f"| {_ms(level['p90_ms'])} | {_ms(level['p99_ms'])} | {_ms(level['max_ms'])} | {level['errors']} "
            f"| {level['timeouts']} | {wrong}{f' (+{ties} near ties)' if ties else ''} | {batch} | {seqs} | {kept} | {steps} "
            f"| {'-' if level.get('client_cores') is None else format(level['client_cores'], '.2f')} |"
        )
    return header + "\n".join(rows) + "\n"


def candidates_table(report: dict) -> str:
    """One row per candidate: its median over its runs (finalists run again), clean if every run was."""
    choice = report.get("choice") or {}
    summaries, finalists = choice.get("summaries", {}), set(choice.get("finalists", []))
    rows = []
    for number, candidate in enumerate(report["candidates"]):
        mark = " **chosen**" if choice.get("chosen") == number else (" (finalist)" if number in finalists else "")
        summary = summaries.get(str(number))
        if summary is None:
            rows.append(
                f"| {number + 1} | {candidate['settings']}{mark} | - | - | - | not measured: {candidate['error']} |"
            )
            continue
        rows.append(
            f"| {number + 1} | {candidate['settings']}{mark} | {summary['requests_per_s']:.1f} "
            f"| {_ms(summary['p99_ms'])} | {summary['runs']} | {'yes' if summary['clean'] else 'no'} |"
        )
    head = f"Candidates at {choice.get('level', '?')}, budget p99 <= {choice.get('budget_ms', '?')} ms (medians):\n\n"
    table = "| # | settings | req/s | p99 ms | runs | clean |\n|---|---|---|---|---|---|\n"
    return head + table + "\n".join(rows) + "\n"


def _check_rule(traffic: dict) -> str:
    if traffic.get("batch_dependent"):
        return (
            f"The served file quantizes activations per batch (dynamic int8), so answers depend on their batch: "
            f"a level passes when at most {100 * traffic['allowed_disagreement']:g}% of answers differ from "
            f"predict's (labels, entities, scores within {traffic['score_tolerance']:g}). A label that differs "
            f"where the two scores are within {traffic['score_tolerance']:g} of each other is a near tie the batch "
            "can reorder, counted apart and not as a difference."
        )
    return f"Every answer must equal predict's (labels and entities exact, scores within {traffic.get('score_tolerance', 1e-4):g})."


def report_markdown(report: dict) -> str:
    machine, traffic, timing = report["machine"], report["traffic"], report["timing"]
    ensemble = report.get("ensemble", "nlu")
    lines = []
    if not report["complete"]:
        lines.append(f"**INCOMPLETE: the run stopped.** {report['stopped']}\n")
    flags = ", ".join(machine.get("cpu_flags", [])) or "none of note"
    lines.append(
        f"Machine: {machine.get('cpu')} ({machine.get('logical_cores')} logical cores; {flags}). "
        f"Served file: {traffic['served_file']}. Traffic: {traffic['texts']} distinct texts of {traffic['file']} "
        f"(mean {traffic['mean_tokens']:.1f} tokens; {traffic['longer_than_max_length']} longer than the max "
        f"length, {traffic.get('long_texts', 'left out')}; {traffic['empty_or_not_text']} empty rows left out). {_check_rule(traffic)} Each level: {timing['warmup_s']:g} s "
        f"warm-up, {timing['duration_s']:g} s measured, {timing['timeout_s']:g} s request timeout.\n"
    )
    for configuration in report["configurations"]:
        lines.append(f"### {configuration['name']}: {configuration['settings']}\n")
        if configuration.get("error"):
            lines.append(f"Not measured: {configuration['error']}\n")
        lines.append(configuration_table(configuration, report["in_process_sequences_per_s"], ensemble))
        examples = [e for level in configuration["levels"] for e in level["wrong_examples"]]
        if examples:
            lines.append(
                "Wrong answers (first few): "
                + "; ".join(f"{e['text']!r}: {e['difference']}" for e in examples[:3])
                + "\n"
            )
    if report["candidates"]:
        lines.append("### Configuration search\n")
        lines.append(candidates_table(report))
        lines.append(report["choice"]["why"] + "\n")
    lines.append(
        "queue/compute ms: per request, from the server's metrics (Triton adds a batched execution's time to "
        "each of its requests). In-process: the same file run by onnxruntime in this process, batches of that "
        "size from the same texts and buckets, the runtime's default threads. Client cores: the CPU the load "
        "generator itself used during the level; on a small machine it competes with the server.\n"
    )
    return "\n".join(lines)


def plot_report(report: dict, path: Path) -> None:
    """Throughput against p99 latency: one curve per swept configuration (closed-loop levels and
    open-loop levels as separate curves), the search's candidates as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for configuration in report["configurations"]:
        for kind, marker in (("concurrency", "o-"), ("rate", "s--")):
            points = [lv for lv in configuration["levels"] if lv["level"]["kind"] == kind and lv["p99_ms"] is not None]
            if points:
                label = configuration["name"] + (" (open loop)" if kind == "rate" else "")
                axis.plot([p["requests_per_s"] for p in points], [p["p99_ms"] for p in points], marker, label=label)
    summaries = (report.get("choice") or {}).get("summaries", {})
    points = [s for s in summaries.values() if s["p99_ms"]]
    if points:
        axis.scatter([s["requests_per_s"] for s in points], [s["p99_ms"] for s in points], marker="x",
                     color="grey", label="search candidates (medians)")  # fmt: skip
    if report.get("choice") and report["choice"].get("budget_ms"):
        axis.axhline(report["choice"]["budget_ms"], color="red", linestyle=":", label="p99 budget")
    axis.set_xlabel("requests/s")
    axis.set_ylabel("p99 latency (ms)")
    axis.set_yscale("log")
    axis.grid(True, alpha=0.3)
    if axis.get_legend_handles_labels()[0]:  # a run stopped before its first level has nothing to draw
        axis.legend(fontsize="small")
    axis.set_title(f"{report['traffic']['served_file']} behind tritonserver")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(report: dict, output: Path, name: str) -> list[Path]:
    import json

    output.mkdir(parents=True, exist_ok=True)
    paths = [output / f"{name}.json", output / f"{name}.md", output / f"{name}.png"]
    paths[0].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths[1].write_text(report_markdown(report), encoding="utf-8")
    plot_report(report, paths[2])
    return paths
