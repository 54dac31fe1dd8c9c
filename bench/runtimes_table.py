"""The per-data-set tables of docs/runtimes.md, from bench/openvino_cpu.sh's results: each variant's
runtime and precision, its held-out score against PyTorch, and its throughput at a few shapes.

    python bench/runtimes_table.py bench/results/runtimes-cpu/2026-12-01-x86_64-2cpu snips-intents snips-slots banking77
"""

import json
import math
import sys
from pathlib import Path

SHAPES = ((1, 16), (8, 16), (32, 16), (32, 32))


def runtime_and_precision(variant: str, hints: dict) -> tuple[str, str]:
    if variant.startswith("openvino-"):
        return "OpenVINO", hints.get(variant, "?") + (" + int8" if variant.endswith("int8") else "")
    if variant.startswith("pytorch"):
        return "PyTorch", "bf16 autocast" if variant.endswith("bf16") else "fp32"
    return "onnxruntime", {"fp32": "fp32", "optimized": "fp32 (O2)", "int8": "dynamic int8"}.get(variant, variant)


def table(prefix: str) -> str:
    bench = json.loads(Path(f"{prefix}-bench.json").read_text())
    validation = json.loads(Path(f"{prefix}-validation.json").read_text())
    metric = validation["primary_metric"]
    scores = {v["variant"]: v for v in validation["variants"]}
    hints = bench["machine"].get("openvino_precision_hints", {})
    rate = {(m["variant"], m["batch_size"], m["seq_len"]): m["sequences_per_second"] for m in bench["measurements"]}
    variants = list(dict.fromkeys(m["variant"] for m in bench["measurements"]))
    shapes = [s for s in SHAPES if any((v, *s) in rate for v in variants)]
    head = (
        f"| variant | runtime | precision | {metric} % | delta (points) | gate | "
        + " | ".join(f"seq/s b{b} s{n}" for b, n in shapes)
        + " | geomean seq/s |"
    )
    rows = [head, "|" + "---|" * (7 + len(shapes))]
    for variant in variants:
        runtime, precision = runtime_and_precision(variant, hints)
        measured = [rate[(variant, *s)] for s in shapes if (variant, *s) in rate]
        geomean = math.exp(sum(map(math.log, measured)) / len(measured))
        score = scores.get(variant)
        if variant == "pytorch":
            cells = [f"{100 * validation['pytorch'][metric]:.2f}", "", ""]
        elif score is None:  # pytorch-bf16: timed only
            cells = ["", "", ""]
        else:
            delta = score["delta_points"][metric]
            cells = [f"{100 * score['scores'][metric]:.2f}", f"{delta:+.2f}", "pass" if score["passed"] else "FAIL"]
        rows.append(
            f"| {variant} | {runtime} | {precision} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(f"{rate.get((variant, *s), 0):.0f}" for s in shapes)
            + f" | {geomean:.0f} |"
        )
    recommended = next(
        (line for line in Path(f"{prefix}-bench.md").read_text().splitlines() if line.startswith("Recommended")), ""
    )
    return "\n".join(rows) + "\n\n" + recommended


if __name__ == "__main__":
    base = sys.argv[1]
    for name in sys.argv[2:]:
        print(f"**{name}**\n\n{table(f'{base}-{name}')}\n")
