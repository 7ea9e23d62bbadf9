#!/usr/bin/env bash
# Score a Zeus model on every model-card row with the CLI (segment + evaluate), two chains of
# one torch thread each (a 2-core machine). Needs the shared data (ZEUSSEG_DATA_ROOT or
# ../shared/data). Reports: OUT/<row>/eval/metrics.md; summary: scripts/summarize_evals.sh OUT.
#
#   bash scripts/eval_model_card.sh MODEL OUT      # MODEL: zeus-default or a run's best/ folder
set -euo pipefail
M=${1:?usage: eval_model_card.sh MODEL OUT}; O=${2:?usage: eval_model_card.sh MODEL OUT}
cd "$(dirname "$0")/.."
mkdir -p "$O"
export OMP_NUM_THREADS=1
Z=${ZEUSSEG:-.venv/bin/zeusseg}
one() { name=$1; ds=$2; shift 2; out=$O/$name
  "$Z" segment --dataset "$ds" --model "$M" "$@" -o "$out" --no-overlay > "$out.log" 2>&1
  "$Z" evaluate --pred "$out" --gt "$ds" -o "$out/eval" --per-class >> "$out.log" 2>&1; }
( one visn-val visn-val -p "virus particles"
  one visn-3class visn-val -p RSV -p SARS-CoV-2 -p FLUAV
  one visn-swap visn-val -p "cell nuclei"
  one dsb-swap dsb-val -p "virus particles"
  one dsb-swap-template dsb-val -p "virus particles" --instruction-mode template
  one visn-swap-template visn-val -p "cell nuclei" --instruction-mode template ) &
( one dsb-val dsb-val -p "cell nuclei"
  one coelho-u2os coelho-u2os -p "cell nuclei"
  one coelho-nih3t3 coelho-nih3t3 -p "cell nuclei"
  one visn-val-template visn-val -p "virus particles" --instruction-mode template
  one dsb-val-template dsb-val -p "cell nuclei" --instruction-mode template ) &
wait
echo "done: $O"
