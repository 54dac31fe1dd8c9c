"""The recipe sweep's runs (bench/recipe_sweep.py's sweep.jsonl files) as one markdown table per
data set, best first: python bench/recipe_table.py RESULTS.jsonl [MORE.jsonl ...] > TABLE.md"""

import json
import sys
from collections import defaultdict

SHOWN = {"snips-joint": ("intent_accuracy", "entity_f1")}  # besides the primary score


def main(paths: list[str]) -> None:
    runs = defaultdict(list)
    for path in paths:
        for line in open(path, encoding="utf-8"):
            run = json.loads(line)
            runs[run["dataset"]].append(run)
    for dataset, found in runs.items():
        found.sort(key=lambda r: -r["best"][r["primary_metric"]])
        primary = found[0]["primary_metric"]
        extra = SHOWN.get(dataset, ())
        print(f"### {dataset} ({found[0]['train_examples']} training rows, {found[0]['validation_examples']} scored)\n")
        print(
            "| lr | batch | epochs | other | "
            + " | ".join([f"{primary} %", *[f"{e} %" for e in extra]])
            + " | best epoch | per epoch |"
        )
        print("|---|---|---|---|" + "---|" * (1 + len(extra)) + "---|---|")
        for r in found:
            other = ", ".join(f"{k} {r[k]:g}" for k in ("warmup_ratio", "weight_decay", "slot_loss_weight") if k in r)
            scores = [f"{100 * r['best'][primary]:.2f}", *[f"{100 * r['best'][e]:.2f}" for e in extra]]
            per_epoch = " / ".join(f"{100 * s:.1f}" for s in r["per_epoch"])
            print(
                f"| {r['lr']:g} | {r['batch_size']} | {r['epochs']} | {other} | "
                + " | ".join(scores)
                + f" | {r['best_epoch']} | {per_epoch} |"
            )
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
