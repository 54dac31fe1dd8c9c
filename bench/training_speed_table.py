"""The training-speed table of bench/gpu_check.sh: one row per `training-<encoder>-<run>.json`
(finetune's metrics.json) in a results folder, compile and precision apart.

    python bench/training_speed_table.py RESULTS_DIR

Steady samples/s is epoch 2's rate (the same steps as epoch 1, nothing left to compile); the
compile estimate is what epoch 1 took beyond the steady rate.
"""

import json
import sys
from pathlib import Path


def row(path: Path) -> str:
    metrics = json.loads(path.read_text())
    name = path.stem.removeprefix("training-")
    encoder, run = (
        ("bert-base (random)", name.removeprefix("bert-base-")) if name.startswith("bert-base-") else name.split("-", 1)
    )
    first, second = metrics["epochs"][0], metrics["epochs"][-1]
    steady = second["samples_per_second"]
    compile_s = max(0.0, first["seconds"] - metrics["train_examples"] / steady)
    return (
        f"| {encoder} | {run} | {metrics['device']} | {metrics['amp']} | {metrics['compiled']} | "
        f"{first['seconds']:.1f} | {steady:.0f} | {compile_s:.1f} | {100 * metrics['best']['accuracy']:.2f}% |"
    )


def main() -> None:
    results = Path(sys.argv[1])
    print(
        "| encoder | run | device | autocast | compiled | epoch 1 s | steady samples/s (epoch 2) | "
        "compile s (est.) | held-out accuracy |\n|---|---|---|---|---|---|---|---|---|"
    )
    for path in sorted(results.glob("training-*.json")):
        print(row(path))


if __name__ == "__main__":
    main()
