"""Plots, drawn from saved JSON (a benchmark report, finetune's out-of-scope calibration), so
they can be re-drawn later."""

from __future__ import annotations

from pathlib import Path


def plot_benchmark(report: dict, path: Path) -> Path:
    """Latency (p50) and throughput against batch size: one column per sequence length,
    one line per variant, log-scaled axes so batch 1 and batch 32 are both readable."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    measurements = report["measurements"]
    seq_lens = sorted({m["seq_len"] for m in measurements})
    variants = list(dict.fromkeys(m["variant"] for m in measurements))
    figure, axes = plt.subplots(2, len(seq_lens), figsize=(4.2 * len(seq_lens), 7), squeeze=False)
    for column, seq_len in enumerate(seq_lens):
        latency_axis, throughput_axis = axes[0][column], axes[1][column]
        for variant in variants:
            points = sorted(
                (m["batch_size"], m["p50_ms"], m["sequences_per_second"])
                for m in measurements
                if m["variant"] == variant and m["seq_len"] == seq_len
            )
            if not points:
                continue
            batches, latencies, rates = zip(*points)
            style = "--" if variant.startswith("pytorch") else "-"
            latency_axis.plot(batches, latencies, style, marker="o", label=variant)
            throughput_axis.plot(batches, rates, style, marker="o", label=variant)
        latency_axis.set_title(f"sequence length {seq_len}")
        for axis, label in ((latency_axis, "p50 latency (ms)"), (throughput_axis, "sequences / s")):
            axis.set_xscale("log", base=2)
            axis.set_xticks(sorted({m["batch_size"] for m in measurements}))
            axis.xaxis.set_major_formatter(ScalarFormatter())  # 1, 8, 32 rather than 2^0, 2^3, 2^5
            axis.xaxis.set_minor_formatter(NullFormatter())
            axis.set_yscale("log")
            axis.set_xlabel("batch size")
            axis.set_ylabel(label)
            axis.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize="small")
    machine = report.get("machine", {})
    figure.suptitle(
        f"nlu-deploy bench: {report['provider']} on {machine.get('cpu', '')}"
        f"{' / ' + machine['gpu'] if machine.get('gpu') else ''}",
        fontsize="medium",
    )
    return _save(figure, path)


def plot_rejection_tradeoff(calibration: dict, path: Path) -> Path:
    """In-scope accuracy against out-of-scope recall as the threshold moves, one line per score,
    the chosen threshold marked: what a stricter or looser threshold would cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    for row in calibration["candidates"]:
        curve = row["curve"]
        axis.plot(
            [100 * p["oos_recall"] for p in curve],
            [100 * p["in_scope_accuracy"] for p in curve],
            marker=".",
            label=f"{row['score']} (AUROC {row['oos_auroc']:.3f})",
        )
        if row["score"] == calibration["rule"]["score"]:
            axis.plot(
                100 * row["oos_recall"],
                100 * row["in_scope_accuracy"],
                "k*",
                markersize=14,
                label=f"chosen: {row['score']} < {row['threshold']:.3g}",
            )
    axis.set_xlabel("out-of-scope recall (%)")
    axis.set_ylabel("in-scope accuracy (%)")
    axis.set_title(
        f"Rejection on {calibration['in_scope_rows']} in-scope / {calibration['out_of_scope_rows']} "
        "out-of-scope held-out rows",
        fontsize="medium",
    )
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize="small", loc="lower left")
    return _save(figure, path)


def plot_accuracy_vs_speed(points: list[dict], path: Path, title: str) -> Path:
    """Each variant's held-out score against its throughput (benchmark.tradeoff_points): the
    variants up and to the right are the ones worth shipping."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.8))
    groups = list(dict.fromkeys(p["model"] for p in points))
    markers = "os^Dv<>p"
    for index, group in enumerate(groups):
        mine = [p for p in points if p["model"] == group]
        axis.scatter(
            [p["sequences_per_second"] for p in mine],
            [100 * p["score"] for p in mine],
            marker=markers[index % len(markers)],
            s=50,
            label=group,
        )
        for p in mine:
            axis.annotate(
                p["variant"].rsplit("/", 1)[-1],
                (p["sequences_per_second"], 100 * p["score"]),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize="x-small",
            )
    axis.set_xscale("log")
    axis.set_xlabel(f"sequences / s (batch {points[0]['batch_size']}, seq len {points[0]['seq_len']}, log scale)")
    axis.set_ylabel(f"held-out {points[0]['metric']} (%)")
    axis.set_title(title, fontsize="medium")
    axis.grid(True, alpha=0.3, which="both")
    axis.legend(fontsize="small", loc="lower left")
    return _save(figure, path)


def plot_search(report: dict, path: Path) -> Path:
    """A hyperparameter search (search_report.json): each trial's score in order, pruned trials at
    their last reported epoch, the best so far as a step line; and the options' importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (scores_axis, importance_axis) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    best, best_line = None, []
    for trial in report["trials"]:
        number = trial["number"] + 1
        if trial["state"] == "COMPLETE":
            scores_axis.plot(number, 100 * trial["value"], "o", color="tab:blue")
            best = trial["value"] if best is None else max(best, trial["value"])
        elif trial["state"] == "PRUNED" and trial["epoch_scores"]:
            last = max(trial["epoch_scores"], key=int)
            scores_axis.plot(number, 100 * trial["epoch_scores"][last], "x", color="tab:red")
        if best is not None:
            best_line.append((number, 100 * best))
    if best_line:
        scores_axis.step(*zip(*best_line), where="post", color="tab:green", label="best so far")
    scores_axis.plot([], [], "o", color="tab:blue", label="finished")
    scores_axis.plot([], [], "x", color="tab:red", label="pruned (last epoch's score)")
    scores_axis.set_xlabel("trial")
    scores_axis.set_ylabel(f"validation {report['metric'].replace('_', ' ')} (%)")
    scores_axis.grid(True, alpha=0.3)
    scores_axis.legend(fontsize="small", loc="lower right")
    importances = report["importances"]
    if importances:
        names = list(importances)[::-1]
        importance_axis.barh(names, [importances[n] for n in names], color="tab:purple")
        importance_axis.set_xlabel("importance (share of variance)")
    else:
        importance_axis.text(
            0.5,
            0.5,
            "importances need two finished\ntrials that differ",
            ha="center",
            va="center",
            transform=importance_axis.transAxes,
        )
        importance_axis.set_axis_off()
    figure.suptitle(f"Search over {', '.join(report['searched'])} ({len(report['trials'])} trials)", fontsize="medium")
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
