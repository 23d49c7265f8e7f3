#!/usr/bin/env bash
# The README's from-scratch table: every position kind x norm placement, one small config, one run at a time.
# Usage: [POSITIONS="learned relative"] [THREADS=2] scripts/train_table.sh [DATA] [RUNS_DIR]
#        (defaults: all three position kinds, data/emotion, runs)
# Each run writes RUNS_DIR/table-<position>-<norm>/ (checkpoint, metrics.json, plots) and a .log beside it.
set -euo pipefail
DATA=${1:-data/emotion}
RUNS=${2:-runs}
THREADS=${THREADS:-2}
BIN=${BIN:-.venv/bin}
mkdir -p "$RUNS"
for position in ${POSITIONS:-learned sinusoidal relative}; do
  for norm in pre post; do
    name="table-$position-$norm"
    "$BIN/encoder-serve" train --data "$DATA" --out "$RUNS/$name" \
      --layers 2 --d-model 128 --heads 4 --d-ff 512 --vocab-size 8000 --max-length 64 \
      --position "$position" --norm "$norm" --epochs 6 --batch-size 32 --lr 1e-3 --warmup 0.1 \
      --patience 2 --seed 0 --threads "$THREADS" > "$RUNS/$name.log" 2>&1
    tail -n 1 "$RUNS/$name.log"
  done
done
