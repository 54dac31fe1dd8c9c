"""What causal attention costs a joint intent + slot model: models of the same size trained from
random weights on SNIPS training rows with the same kind of tokenizer (byte-level BPE trained on
those texts), scored on the same held-out tenth.

No pretrained weights can be fetched here, so this isolates the attention pattern. Three runs:
RoBERTa's architecture (every token sees the whole text), the same with a causal mask
(`is_decoder`: each token sees only the tokens to its left, so a slot tag is decided before the
words after it are read; nothing else changes), and GPT-2's (causal, and pre-LN: its layer norms
sit before each block, which trains differently from random weights). Pretraining changes all
absolute scores; the first two rows show what the mask alone costs the slots.

    python bench/decoder_context_cpu.py    # 3 layers x 192, 6,000 rows, 4 epochs each; about 16 minutes on 2 cores

Results: bench/results/decoder-context-cpu/<date>-<machine>/ (each run's metrics.json and
output, and context.md). REUSE=1 keeps the runs already made and writes the table.
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from family_models import build_family_model  # noqa: E402

SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
WORK = ROOT / "models" / "decoder-context"
_ENCODER = {"num_hidden_layers": 3, "hidden_size": 192, "num_attention_heads": 3, "intermediate_size": 768}
# run name -> (family, config): the same depth, width, heads and feed-forward size for all three.
# RoBERTa with is_decoder masks attention causally and changes nothing else: the clean comparison
# of the attention pattern (GPT-2 also differs in where its layer norms sit, pre-LN, which trains
# differently from random weights). Its intent is read from the first token, which under a causal
# mask has seen nothing else: only its slot figures mean something.
ARMS = {
    "roberta": ("roberta", _ENCODER),
    "roberta-causal": ("roberta", {**_ENCODER, "is_decoder": True}),
    "gpt2": ("gpt2", {"n_layer": 3, "n_embd": 192, "n_head": 3, "n_inner": 768, "n_positions": 128}),
}
EPOCHS = os.environ.get("EPOCHS", "4")
ROWS = int(os.environ.get("ROWS", "6000"))  # a seeded sample of SNIPS's training rows (2 cores: minutes, not hours)


def main() -> None:
    results = ROOT / "bench" / "results" / "decoder-context-cpu" / f"{date.today()}-{platform.machine()}"
    results.mkdir(parents=True, exist_ok=True)
    lines = [line for line in (SHARED / "snips" / "train.jsonl").read_text().splitlines() if line]
    random.Random(0).shuffle(lines)
    WORK.mkdir(parents=True, exist_ok=True)
    train = WORK / f"snips-{ROWS}.jsonl"
    train.write_text("\n".join(lines[:ROWS]) + "\n")
    texts = [json.loads(line)["text"] for line in lines]  # the tokenizers read every training text
    rows = []
    for arm, (family, size) in ARMS.items():
        output = WORK / f"{arm}-joint"
        if os.environ.get("REUSE") and (output / "metrics.json").exists():  # REUSE=1: the table from runs made
            rows.append(_row(arm, output, results))
            continue
        base = build_family_model(family, WORK / f"{arm}-base", texts, vocab_size=8000, overrides=size)
        command = [sys.executable, "-m", "nlu_deploy", "finetune", "--model", str(base), "--train", str(train),
                   "--task", "joint", "--intent-column", "intent", "--epochs", EPOCHS, "--batch-size", "32",
                   "--lr", "5e-4", "--max-length", "64", "--seed", "42", "--output", str(output), "--overwrite"]  # fmt: skip
        with (results / f"{arm}.txt").open("w") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
        rows.append(_row(arm, output, results))
        print(*rows[-1], flush=True)
    lines = [
        f"{ROWS} SNIPS training rows (a seeded sample), a held-out tenth of them; {EPOCHS} epochs from random "
        "weights; best epoch by the joint score.",
        "",
        "| architecture, 3 x 192 | attention | intent accuracy % | entity F1 % | exact match % | best epoch |",
        "|---|---|---|---|---|---|",
    ]
    for arm, best, epoch in rows:
        kind = "bidirectional" if arm == "roberta" else "causal"
        values = [f"{100 * v:.2f}" for v in best.values()]
        if arm == "roberta-causal":  # its intent reads the first token, which saw nothing else
            values[0], values[2] = "(first token)", "-"
        lines.append(f"| {arm} | {kind} | {' | '.join(values)} | {epoch} |")
    (results / "context.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _row(family: str, output: Path, results: Path) -> tuple[str, dict, int]:
    metrics = json.loads((output / "metrics.json").read_text())
    (results / f"{family}-metrics.json").write_text(json.dumps(metrics, indent=1))
    best = {k: metrics["best"][k] for k in ("intent_accuracy", "entity_f1", "exact_match")}
    return family, best, metrics["best_epoch"]


if __name__ == "__main__":
    main()
