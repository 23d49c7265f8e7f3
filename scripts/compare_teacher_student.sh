#!/usr/bin/env bash
# The distillation comparison: the teacher and the shipped student, each benchmarked by `encoder-serve bench-model`
# back to back in one run with the same thread count, then the student's speed-up per engine.
# Usage: [DATA=data/emotion] [TEACHER_PKG=runs/teacher-pkg] [STUDENT_PKG=models/emotion] [THREADS=1] scripts/compare_teacher_student.sh
set -euo pipefail
DATA=${DATA:-data/emotion}
TEACHER_PKG=${TEACHER_PKG:-runs/teacher-pkg}
STUDENT_PKG=${STUDENT_PKG:-models/emotion}
OUT=${OUT:-benchmarks/results/distillation}
THREADS=${THREADS:-1}
BIN=${BIN:-.venv/bin}
[ -d "$TEACHER_PKG" ] || "$BIN/encoder-serve" export runs/teacher "$TEACHER_PKG" --name emotion-teacher --data "$DATA"
for who in teacher student; do
  pkg=TEACHER_PKG; [ "$who" = student ] && pkg=STUDENT_PKG
  "$BIN/encoder-serve" bench-model "${!pkg}" --data "$DATA" --out "$OUT/$who" --threads "$THREADS" --rounds "${ROUNDS:-2}"
done
"$BIN/python" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {who: {r["engine"]: r for r in json.loads((out / who / "bench-model.json").read_text())["results"]}
        for who in ("teacher", "student")}
lines = ["| engine | teacher acc | student acc | teacher texts/s | student texts/s | speed-up | teacher MB | student MB |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for engine, t in rows["teacher"].items():
    s = rows["student"].get(engine)
    if s:
        lines.append(f"| {engine} | {100*t['accuracy']:.2f} | {100*s['accuracy']:.2f} | {t['throughput_texts_per_s']:.0f} | "
                     f"{s['throughput_texts_per_s']:.0f} | {s['throughput_texts_per_s']/t['throughput_texts_per_s']:.1f}x | "
                     f"{t['size_mb']:.1f} | {s['size_mb']:.1f} |")
(out / "comparison.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
