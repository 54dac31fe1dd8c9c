"""Bulk prediction on this machine (docs/bulk.md): SNIPS training texts repeated to 20,000 and
200,000 lines, answered by the shipped variant of a `run` folder:
- today's path, `predict --file IN --json` (every text and answer in memory, printed at the end);
- `predict --file IN --output OUT.jsonl` and `.parquet` (streamed in chunks);
- the same on a Ray instance started on this machine (`--ray local`, one actor with 2 threads);
- the model alone in this process: the texts tokenized beforehand, sorted by token length, in
  batches of 32 padded to their longest, only the runtime's calls timed (the ceiling).
Each command runs in a child process; its wall time and peak resident set (getrusage of the child)
are recorded. Usage: python bench/bulk_predict_cpu.py [MODEL_DIR] (default models/snips/onnx, from
`nlu-deploy run --train ../shared/data/snips/train.jsonl --label-column intent --epochs 1 --output
models/snips`). Results: bench/results/bulk-predict-cpu/<date>-<machine>/."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data"))
SIZES = (20_000, 200_000)


def snips_texts() -> list[str]:
    with (SHARED / "snips" / "train.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def write_input(folder: Path, texts: list[str], rows: int) -> Path:
    path = folder / f"snips-{rows}.txt"
    if not path.exists():
        repeated = (texts * (rows // len(texts) + 1))[:rows]
        path.write_text("".join(text.replace("\n", " ") + "\n" for text in repeated), encoding="utf-8")
    return path


def timed(command: list[str], log: Path) -> dict:
    """Wall seconds and peak RSS (MB) of one child process; stdout to /dev/null, stderr to log."""
    started = time.monotonic()
    with log.open("a", encoding="utf-8") as err:
        err.write(f"$ {' '.join(command)}\n")
        err.flush()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed; see {log}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def model_only_rows_per_second(model_dir: Path, texts: list[str], batch_size: int = 32) -> dict:
    """The runtime's calls alone over `texts`, sorted by token length, in batches of 32."""
    from nlu_deploy.predict import load_task_predictor
    from nlu_deploy.runtime.sessions import encode, length_sorted_batches, pad_batch

    predictor, used, _ = load_task_predictor(model_dir)
    backend = getattr(predictor, "backend", predictor)
    encoded = encode(backend.tokenizer, texts, backend.max_length)
    batches = [
        pad_batch([encoded.features[i] for i in rows], backend.tokenizer.pad_token_id or 0)
        for rows in length_sorted_batches(encoded, batch_size)
    ]
    backend.run_outputs(batches[len(batches) // 2])  # warm up
    started = time.perf_counter()
    for batch in batches:
        backend.run_outputs(batch)
    seconds = time.perf_counter() - started
    return {
        "file": used,
        "rows": len(texts),
        "seconds": round(seconds, 2),
        "rows_per_second": round(len(texts) / seconds),
    }


def main() -> None:
    model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "models" / "snips" / "onnx")
    from nlu_deploy.evaluation.benchmark import _cpu_model
    from nlu_deploy.runtime.machine import cpu_flags

    stamp = f"{time.strftime('%Y-%m-%d')}-{platform.machine()}-{os.cpu_count()}cpu"
    out = ROOT / "bench" / "results" / "bulk-predict-cpu" / stamp
    work = ROOT / "models" / "bulk-bench"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    log.write_text("")
    texts = snips_texts()
    results = {
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(),
                    "flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx")))},
        "model": str(model_dir), "runs": [],
    }  # fmt: skip
    tool = [sys.executable, "-m", "nlu_deploy", "predict", str(model_dir)]
    for rows in SIZES:
        source = write_input(work, texts, rows)
        runs = {
            "predict --json (in memory)": [*tool, "--file", str(source), "--json"],
            "--output .jsonl": [*tool, "--file", str(source), "--output", str(work / "out.jsonl"), "--overwrite"],
            "--output .parquet": [*tool, "--file", str(source), "--output", str(work / "out.parquet"), "--overwrite"],
        }
        if rows == SIZES[-1]:
            runs["--output .jsonl --ray local"] = [*runs["--output .jsonl"], "--ray", "local"]
        for name, command in runs.items():
            figures = timed(command, log)
            figures.update(rows=rows, how=name, rows_per_second=round(rows / figures["seconds"]))
            print(json.dumps(figures), flush=True)
            results["runs"].append(figures)
    results["model_only_batch_32"] = model_only_rows_per_second(model_dir, texts * (SIZES[-1] // len(texts) + 1))
    print(json.dumps(results["model_only_batch_32"]), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(table(results))
    print(table(results))


def table(results: dict) -> str:
    lines = [
        f"CPU: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"{' '.join(results['machine']['flags'])}",
        f"Model: {results['model']}; the runtime alone, batches of 32 sorted by length: "
        f"{results['model_only_batch_32']['rows_per_second']:,} rows/s ({results['model_only_batch_32']['file']})",
        "",
        "| how | rows | seconds | rows/s | peak RSS (MB) |",
        "|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        lines.append(
            f"| {run['how']} | {run['rows']:,} | {run['seconds']} | {run['rows_per_second']:,} | {run['peak_rss_mb']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
