"""Full-size shapes of every model family on this CPU: PyTorch eager against each variant the
family gets, at batch 1 and 32 on real SNIPS lengths, in one bench run per family.

No weights can be fetched here, so each model is its published shape with random weights
(tests/family_models.py), and its tokenizer is one of its own kind trained on SNIPS training
texts. Speed does not depend on what the weights are; a short fine-tune (two epochs on 400 SNIPS
training sentences) gives each an intent head, so that validate can say which variants keep
PyTorch's answers. Scores mean nothing here: accuracy was not measured (docs/model-families.md).

    python bench/families_cpu.py                       # deberta-v2 modernbert albert gpt2 qwen2
    python bench/families_cpu.py gpt2 qwen2            # some of them
    QWEN2_LAYERS=12 python bench/families_cpu.py qwen2  # a shallower Qwen2 if time is short

Results: bench/results/families-cpu/<date>-<machine>/<family>/ (the export's manifest, validate's
and bench's reports, the commands' output) and families.md, the table docs/model-families.md shows.
Run it on an otherwise idle machine; it takes about 40 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from family_models import FAMILIES, build_family_model  # noqa: E402

SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
WORK = ROOT / "models" / "families"
DEFAULT_FAMILIES = ("deberta-v2", "modernbert", "albert", "gpt2", "qwen2")
TOKENIZER_VOCAB = 8000  # trained on SNIPS training texts; the model keeps its published vocabulary size


def snips_samples() -> tuple[Path, Path]:
    """400 training rows to fine-tune on, and 320 other training texts whose lengths are benched."""
    rows = [json.loads(line) for line in (SHARED / "snips" / "train.jsonl").read_text().splitlines() if line]
    random.Random(0).shuffle(rows)
    WORK.mkdir(parents=True, exist_ok=True)
    train, lengths = WORK / "snips-400.jsonl", WORK / "snips-lengths-320.jsonl"
    train.write_text("".join(json.dumps({"text": r["text"], "intent": r["intent"]}) + "\n" for r in rows[:400]))
    lengths.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows[400:720]))
    return train, lengths


def run(command: list[str], log: Path, failing_ok: bool = False) -> None:
    """failing_ok: validate exits 1 when a variant fails the gate, which is a result here."""
    started = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=not failing_ok)
        handle.write(f"({time.perf_counter() - started:.0f} s)\n")
    print(f"  {command[3]} done in {time.perf_counter() - started:.0f} s", flush=True)


def measure(family: str, train: Path, lengths: Path, results: Path) -> None:
    work, out = WORK / family, results / family
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.txt"
    log.write_text("")
    texts = [json.loads(line)["text"] for line in (SHARED / "snips" / "train.jsonl").read_text().splitlines()]
    shape = FAMILIES[family]
    overrides = {}
    if family == "qwen2" and os.environ.get("QWEN2_LAYERS"):
        overrides["num_hidden_layers"] = int(os.environ["QWEN2_LAYERS"])
    build_family_model(family, work / "base", texts, size="full", vocab_size=TOKENIZER_VOCAB, overrides=overrides)
    cli = [sys.executable, "-m", "nlu_deploy"]
    run([*cli, "finetune", "--model", str(work / "base"), "--train", str(train), "--label-column", "intent",
         "--epochs", "2", "--lr", "5e-4", "--batch-size", "16", "--max-length", "64", "--output", str(work / "checkpoint"),
         "--overwrite"], log)  # fmt: skip
    run([*cli, "export", str(work / "checkpoint"), "--optimize", "O2", "--quantize", "dynamic", "--openvino",
         "--output", str(work / "onnx"), "--overwrite"], log)  # fmt: skip
    run([*cli, "validate", "--model", str(work / "checkpoint"), "--onnx", str(work / "onnx"), "--data",
         str(work / "checkpoint" / "validation_split.jsonl"), "--json", str(out / "validate.json")], log,
        failing_ok=True)  # fmt: skip
    run([*cli, "bench", str(work / "onnx"), "--model", str(work / "checkpoint"), "--batch-sizes", "1",
         "--seq-lens", "16", "--real-lengths", str(lengths), "--real-batch-sizes", "1,32", "--warmup", "2",
         "--min-iters", "5", "--min-seconds", "1", "--json", str(out / "bench.json")], log)  # fmt: skip
    manifest = json.loads((work / "onnx" / "nlu_deploy.json").read_text())
    (out / "export-manifest.json").write_text(json.dumps(manifest, indent=1))
    config = json.loads((work / "checkpoint" / "config.json").read_text())
    (out / "shape.json").write_text(json.dumps({k: config.get(k) for k in sorted(shape.full)}, indent=1))


def main() -> None:
    families = sys.argv[1:] or list(DEFAULT_FAMILIES)
    unknown = set(families) - set(FAMILIES)
    if unknown:
        sys.exit(f"unknown families {sorted(unknown)}; known: {', '.join(sorted(FAMILIES))}")
    results = ROOT / "bench" / "results" / "families-cpu" / f"{date.today()}-{platform.machine()}-{os.cpu_count()}cpu"
    train, lengths = snips_samples()
    for family in families:
        print(f"{family}:", flush=True)
        try:
            measure(family, train, lengths, results)
        except subprocess.CalledProcessError as exc:  # one family's failure is reported, the rest go on
            print(f"  failed: {' '.join(exc.cmd[3:5])} (see {results / family / 'commands.txt'})", flush=True)
    subprocess.run([sys.executable, str(ROOT / "bench" / "families_table.py"), str(results)], check=True)


if __name__ == "__main__":
    main()
