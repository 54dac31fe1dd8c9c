"""What causal attention costs a joint intent + slot model: an encoder and a decoder of the same
size, both trained from random weights on SNIPS's training data with the same kind of tokenizer
(byte-level BPE trained on those texts), scored on the same held-out tenth of it.

No pretrained weights can be fetched here, so this isolates the attention pattern: the encoder
(RoBERTa's architecture) lets every token see the whole text, the decoder (GPT-2's) only the
tokens to its left, so a slot tag is decided before the words after it are read, and the intent
is read from the last token. Pretraining changes both absolute scores, not that asymmetry.

    python bench/decoder_context_cpu.py          # 4 layers x 256, 6 epochs each; about 10 minutes on 2 cores

Results: bench/results/decoder-context-cpu/<date>-<machine>/ (each run's metrics.json and
output, and context.md).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from family_models import build_family_model  # noqa: E402

SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
WORK = ROOT / "models" / "decoder-context"
SIZE = {  # the same depth, width, heads and feed-forward size for both
    "roberta": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
    "gpt2": {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_inner": 1024, "n_positions": 128},
}
EPOCHS = os.environ.get("EPOCHS", "6")


def main() -> None:
    results = ROOT / "bench" / "results" / "decoder-context-cpu" / f"{date.today()}-{platform.machine()}"
    results.mkdir(parents=True, exist_ok=True)
    train = SHARED / "snips" / "train.jsonl"
    texts = [json.loads(line)["text"] for line in train.read_text().splitlines() if line]
    rows = []
    for family, size in SIZE.items():
        base = build_family_model(family, WORK / f"{family}-base", texts, vocab_size=8000, overrides=size)
        output = WORK / f"{family}-joint"
        command = [sys.executable, "-m", "nlu_deploy", "finetune", "--model", str(base), "--train", str(train),
                   "--task", "joint", "--intent-column", "intent", "--epochs", EPOCHS, "--batch-size", "32",
                   "--lr", "5e-4", "--max-length", "64", "--seed", "42", "--output", str(output), "--overwrite"]  # fmt: skip
        with (results / f"{family}.txt").open("w") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
        metrics = json.loads((output / "metrics.json").read_text())
        (results / f"{family}-metrics.json").write_text(json.dumps(metrics, indent=1))
        best = {k: metrics["best"][k] for k in ("intent_accuracy", "entity_f1", "exact_match")}
        rows.append((family, best, metrics["best_epoch"]))
        print(family, best, flush=True)
    lines = [
        "| architecture | attention | " + " | ".join(k for k in rows[0][1] if isinstance(rows[0][1][k], float)) + " |"
    ]
    lines.append("|---|---|" + "---|" * sum(isinstance(v, float) for v in rows[0][1].values()))
    for family, best in rows:
        kind = "bidirectional (RoBERTa)" if family == "roberta" else "causal (GPT-2)"
        values = " | ".join(f"{100 * v:.2f}" for v in best.values() if isinstance(v, float))
        lines.append(f"| {family} 4 x 256 | {kind} | {values} |")
    (results / "context.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
