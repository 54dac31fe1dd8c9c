"""Compare `predict --json` outputs of the same texts from two runs (CPU against CUDA, fp32
against fp16): labels and entities must be equal, scores are reported by their largest gap.

    python bench/compare_predictions.py NAME=REFERENCE.jsonl,OTHER.jsonl [NAME=...]

Prints a markdown table; exits 1 when any pair differs in a label or an entity span, unless
--no-gate (fp16 against fp32: differences are expected, and counted).
"""

import argparse
import json
import sys
from pathlib import Path


def read(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def spans(prediction: dict) -> list[tuple]:
    return [(e["type"], e["start"], e["end"]) for e in prediction.get("entities", [])]


def compare(reference: list[dict], other: list[dict]) -> dict:
    if [r["text"] for r in reference] != [o["text"] for o in other]:
        raise SystemExit("the two files do not hold the same texts in the same order")
    label_diffs = sum(r.get("label") != o.get("label") for r, o in zip(reference, other))
    entity_diffs = sum(spans(r) != spans(o) for r, o in zip(reference, other))
    gaps = [abs(r["score"] - o["score"]) for r, o in zip(reference, other) if "score" in r]
    gaps += [
        abs(a["score"] - b["score"])
        for r, o in zip(reference, other)
        if spans(r) == spans(o)
        for a, b in zip(r.get("entities", []), o.get("entities", []))
    ]
    return {
        "texts": len(reference),
        "entities": sum(len(spans(r)) for r in reference),
        "label_differences": label_diffs,
        "entity_differences": entity_diffs,
        "max_score_gap": max(gaps, default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", metavar="NAME=REFERENCE,OTHER")
    parser.add_argument("--reference", default="reference", help="What the first file of each pair is, for the table.")
    parser.add_argument("--no-gate", action="store_true", help="Report differences without failing.")
    args = parser.parse_args()
    print(
        f"| pair (against {args.reference}) | texts | entities | label differences | entity differences | "
        "max score gap |\n|---|---|---|---|---|---|"
    )
    differ = False
    for pair in args.pairs:
        name, files = pair.split("=", 1)
        reference, other = files.split(",")
        c = compare(read(reference), read(other))
        differ |= bool(c["label_differences"] or c["entity_differences"])
        print(
            f"| {name} | {c['texts']} | {c['entities']} | {c['label_differences']} | {c['entity_differences']} | "
            f"{c['max_score_gap']:.2e} |"
        )
    sys.exit(1 if differ and not args.no_gate else 0)


if __name__ == "__main__":
    main()
