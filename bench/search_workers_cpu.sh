#!/usr/bin/env bash
# One search spread over 2 workers (1 thread each) against the same search in 1 worker (2 threads),
# on BANKING77, sharing a real PostgreSQL study (pgserver): the wall time of each and the best
# score found (docs/search.md, "Search on several machines").
#   bash bench/search_workers_cpu.sh                  # BANKING77, --search 8, the task's epochs
#   ROWS=2000 EPOCHS=1 bash bench/search_workers_cpu.sh   # a smaller run, as on 2026-12-01
# Needs the test extra (pgserver, psycopg) and ../shared/data/banking77.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${BANKING77:-../shared/data/banking77/train.csv}
trials=${TRIALS:-8}
work=${WORK_DIR:-models/bench-search-workers}
stamp="$(date +%Y-%m-%d)-$(uname -m)-$(nproc)cpu-banking77${ROWS:+-$ROWS-rows}${EPOCHS:+-$EPOCHS-epochs}"
out=bench/results/search-workers-cpu/$stamp
mkdir -p bench/results/search-workers-cpu "$work"
rm -rf "$work"/*
if [ -n "${ROWS:-}" ]; then  # a seeded sample of the rows, header kept
  python -c "import csv, random, sys; rows = list(csv.reader(open(sys.argv[1], newline=''))); body = rows[1:]; \
random.Random(0).shuffle(body); csv.writer(sys.stdout).writerows([rows[0], *body[:int(sys.argv[2])]])" \
    "$data" "$ROWS" > "$work/train.csv"
  data="$work/train.csv"
fi
options=(--train "$data" --label-column category --seed 42 --search "$trials" ${EPOCHS:+--epochs "$EPOCHS"})

# a PostgreSQL for the study, alive until this script ends
python - "$work/postgres" > "$work/postgres.url" <<'PY' &
import sys, time
import pgserver
server = pgserver.get_server(sys.argv[1], cleanup_mode="stop")
print(server.get_uri(), flush=True)
time.sleep(10**6)
PY
server=$!
trap 'kill $server 2>/dev/null' EXIT
until [ -s "$work/postgres.url" ]; do sleep 0.5; done
url=$(cat "$work/postgres.url")

started=$(date +%s.%N)
workers=()
for worker in 1 2; do
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nlu-deploy finetune "${options[@]}" --study-storage "$url" \
    --study-name two-workers --output "$work/worker-$worker" > "$work/worker-$worker.log" 2>&1 &
  workers+=($!)
done
wait "${workers[@]}"
two=$(python -c "import time, sys; print(f'{time.time() - float(sys.argv[1]):.0f}')" "$started")
nlu-deploy search-result --study-storage "$url" --study-name two-workers --output "$work/two-workers" \
  | tee "$work/two-workers.txt"

started=$(date +%s.%N)
OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 nlu-deploy finetune "${options[@]}" --output "$work/one-worker" \
  > "$work/one-worker.log" 2>&1
one=$(python -c "import time, sys; print(f'{time.time() - float(sys.argv[1]):.0f}')" "$started")

python - "$work" "$two" "$one" "$trials" <<'PY' | tee "$out.md"
import json, sys
from pathlib import Path
work, two, one, trials = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
rows = []
for name, seconds in (("two-workers", two), ("one-worker", one)):
    report = json.loads((work / name / "search_report.json").read_text())
    states = [t["state"] for t in report["trials"]]
    rows.append(f"| {name} | {seconds} | {report['best_value'] * 100:.2f}% | trial {report['best_trial'] + 1} | "
                f"{states.count('COMPLETE')} finished, {states.count('PRUNED')} pruned, {states.count('FAIL')} failed |")
print(f"Search of {trials} trials; wall time from the first worker's start to the last one's end.\n")
print("| run | wall s | best held-out accuracy | best | trials |\n|---|---|---|---|---|")
print("\n".join(rows))
PY
cp "$work/two-workers/search_report.json" "$out-two-workers-report.json"
cp "$work/one-worker/search_report.json" "$out-one-worker-report.json"
