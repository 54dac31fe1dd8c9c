"""The teacher/student table and plot (at batch 32, sequence length 32) of bench/distill_cpu.sh,
from the files it wrote:
    python bench/distill_table.py WORK_DIR BENCH_JSON K [K ...]
prints the markdown table and draws BENCH_JSON's name with .png for -bench.json.
WORK_DIR holds teacher/, teacher-onnx/ and student-K/, student-K-onnx/ (with validate's
validation.json), and for K given as "K-auto" student-K-auto-onnx/ (student-K exported with
--quantize auto); BENCH_JSON is one `bench --also student-K=...` run over all of them."""

import json
import sys
from pathlib import Path

from nlu_deploy.evaluation.benchmark import tradeoff_points
from nlu_deploy.evaluation.plots import plot_accuracy_vs_speed
from nlu_deploy.reports import markdown_table, percent, signed_points

work, bench_json, layers = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
benchmark = json.loads(bench_json.read_text())
validations = {"": json.loads((work / "teacher-onnx" / "validation.json").read_text())}
students = {}
for k in layers:  # "3-auto": student-3's checkpoint exported with --quantize auto into student-3-auto-onnx
    validations[f"student-{k}"] = json.loads((work / f"student-{k}-onnx" / "validation.json").read_text())
    students[f"student-{k}"] = json.loads((work / f"student-{k.removesuffix('-auto')}" / "metrics.json").read_text())
teacher_metrics = json.loads((work / "teacher" / "metrics.json").read_text())
teacher_layers = json.loads((work / "teacher" / "config.json").read_text())["num_hidden_layers"]
teacher_score = validations[""]["pytorch"][validations[""]["primary_metric"]]
points = tradeoff_points(benchmark, validations, 32, 32)
single = {p["variant"]: p for p in tradeoff_points(benchmark, validations, 1, 16)}

rows = []
for p in points:
    label, _, variant = p["variant"].rpartition("/")
    facts = students[label]["distillation"] if label else None
    seconds = sum(e["seconds"] for e in (students[label] if label else teacher_metrics)["epochs"])
    latency = next(
        m["p50_ms"]
        for m in benchmark["measurements"]
        if (m["variant"], m["batch_size"], m["seq_len"]) == (p["variant"], 1, 16)
    )
    rows.append(
        [
            label or "teacher",
            len(facts["kept_layers"]) if facts else teacher_layers,
            variant,
            percent(p["score"]),
            signed_points(100 * (p["score"] - teacher_score)),
            f"{p['speedup_vs_pytorch']:.2f}x",
            f"{single[p['variant']]['speedup_vs_pytorch']:.2f}x",
            f"{latency:.2f}",
            f"{seconds:.0f}",
        ]
    )
machine = benchmark["machine"]
print(
    f"Held-out split: {validations['']['data']} ({validations['']['examples']} rows). "
    f"{machine.get('cpu')}, {machine.get('logical_cores')} logical cores; one bench run.\n"
)
print(
    markdown_table(
        [
            "model",
            "layers",
            "variant",
            f"{points[0]['metric']} %",
            "vs teacher PyTorch (points)",
            "speed-up b32 s32",
            "speed-up b1 s16",
            "p50 ms b1 s16",
            "training s",
        ],
        rows,
    )
)
for label, metrics in students.items():
    if label.endswith("-auto"):
        continue
    facts = metrics["distillation"]
    print(
        f"\n{label}: layers {facts['kept_layers']} of {facts['teacher_layers']}, T {facts['temperature']}, "
        f"alpha {facts['alpha']}, best epoch {metrics['best_epoch']} of {len(metrics['epochs'])}; soft-target loss "
        f"to the teacher on held-out rows {facts['kl_to_teacher_before']:.4f} -> {facts['kl_to_teacher_after']:.4f}."
    )

plot = bench_json.with_name(bench_json.name.replace("-bench.json", ".png"))
plot_accuracy_vs_speed(
    points, plot, f"{work.name.removeprefix('bench-distill-')}: teacher and students (one bench run)"
)
