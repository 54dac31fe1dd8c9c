"""The families table from bench/families_cpu.py's results: per family, what the export wrote
(fused ops, what it could not have and why), which variants kept PyTorch's answers on the
held-out rows, and their speed at batch 1 and 32 on real SNIPS lengths against PyTorch eager.

    python bench/families_table.py bench/results/families-cpu/DATE-MACHINE   # writes families.md there
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def family_rows(directory: Path) -> list[str]:
    bench = json.loads((directory / "bench.json").read_text())
    validation = json.loads((directory / "validate.json").read_text())
    passed = {v["variant"]: v["passed"] for v in validation["variants"]}
    agreement = {v["variant"]: next(iter(v.get("agreement", {}).values()), None) for v in validation["variants"]}
    real = [m for m in bench["measurements"] if m["lengths"] == "real"]
    by_variant: dict[str, dict[int, dict]] = {}
    for m in real:
        by_variant.setdefault(m["variant"], {})[m["batch_size"]] = m
    rows = []
    reference = by_variant["pytorch"][32]["sequences_per_second"]
    for variant, sizes in by_variant.items():
        one, many = sizes.get(1), sizes.get(32)
        gate = "reference" if variant.startswith("pytorch") else ("pass" if passed.get(variant) else "FAIL")
        agrees = agreement.get(variant)
        rows.append(
            f"| {directory.name} | {variant} | {gate} | {'' if agrees is None else f'{100 * agrees:.1f}'} | "
            f"{one['p50_ms']:.1f} | {one['speedup_vs_pytorch']:.2f}x | "
            f"{many['sequences_per_second']:.0f} | {many['sequences_per_second'] / reference:.2f}x |"
        )
    return rows


def facts_row(directory: Path) -> str:
    manifest = json.loads((directory / "export-manifest.json").read_text())
    fused = ", ".join(f"{op} {n}" for op, n in manifest.get("fused_ops", {}).items()) or "none"
    skipped = "; ".join(f"{v}: {why}" for v, why in manifest.get("skipped", {}).items()) or "nothing"
    shape = json.loads((directory / "shape.json").read_text())
    layers = shape.get("num_hidden_layers") or shape.get("n_layer")
    width = shape.get("hidden_size") or shape.get("n_embd")
    return f"| {directory.name} | {layers} x {width}, vocab {shape.get('vocab_size')} | {fused} | {skipped} |"


def main() -> None:
    results = Path(sys.argv[1])
    families = sorted(d for d in results.iterdir() if (d / "bench.json").exists())
    first = json.loads((families[0] / "bench.json").read_text())["machine"] if families else {}
    lines = [
        f"# Model families on {first.get('cpu', '?')} ({', '.join(first.get('cpu_flags', []))}), "
        f"{first.get('logical_cores', '?')} logical cores",
        "",
        "Random weights at each family's published shape; SNIPS training texts at their real lengths.",
        "Agreement: % of held-out rows where the variant names PyTorch's intent.",
        "",
        "Batch 1: median latency and its ratio to PyTorch eager's; batch 32: sequences/s and its ratio.",
        "",
        "| family | variant | gate | agreement % | batch 1 p50 ms | vs PyTorch | batch 32 seq/s | vs PyTorch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for directory in families:
        lines += family_rows(directory)
    lines += ["", "| family | shape | fused by onnxruntime's optimizer | not written, and why |", "|---|---|---|---|"]
    lines += [facts_row(directory) for directory in families]
    (results / "families.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
