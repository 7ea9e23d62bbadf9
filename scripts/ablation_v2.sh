#!/usr/bin/env bash
# Model-v2 encoder ablation at one budget and one seed (docs/ablations.md, "Pretrained encoder"):
# the training recipe of configs/zeroshot/effnet-hybrid.yaml (data, augmentation, schedule, seed
# 0), with only the model changed, each arm trained for MINUTES minutes on both threads, one after
# the other, then scored on visn-val, dsb-val, coelho-u2os and coelho-nih3t3 through the CLI.
#
#   bash scripts/ablation_v2.sh OUT [MINUTES] [ARM ...]     # default 10 min, all four arms
#   bash scripts/summarize_evals.sh OUT/*/eval               # one line per arm and row
#
# Arms: scratch (zeus-hybrid-s, our encoder from scratch), frozen (zeus-effnet-hybrid-frozen:
# ImageNet EfficientNet-Lite0, stem + 2 stages fixed), all (zeus-effnet-hybrid, all trained),
# unet (unet-plain, the plain 2 M U-Net; text ignored).
set -euo pipefail
O=${1:?usage: ablation_v2.sh OUT [MINUTES] [ARM ...]}; MIN=${2:-10}
shift $(( $# > 1 ? 2 : 1 ))
ARMS=("$@"); [ ${#ARMS[@]} -gt 0 ] || ARMS=(scratch frozen all unet)
cd "$(dirname "$0")/.."
Z=${ZEUSSEG:-.venv/bin/zeusseg}
declare -A MODEL=([scratch]=zeus-hybrid-s [frozen]=zeus-effnet-hybrid-frozen
                  [all]=zeus-effnet-hybrid [unet]=unet-plain)
score() { # two chains of one thread each: segment + evaluate per row
  local m=$1 out=$2
  one() { "$Z" segment --dataset "$2" --model "$m" -p "$3" -o "$out/$1" --no-overlay \
            > "$out/$1.log" 2>&1
          "$Z" evaluate --pred "$out/$1" --gt "$2" -o "$out/$1/eval" >> "$out/$1.log" 2>&1; }
  ( export OMP_NUM_THREADS=1; one visn-val visn-val "virus particles"
    one coelho-u2os coelho-u2os "cell nuclei" ) &
  ( export OMP_NUM_THREADS=1; one dsb-val dsb-val "cell nuclei"
    one coelho-nih3t3 coelho-nih3t3 "cell nuclei" ) &
  wait
}
for arm in "${ARMS[@]}"; do
  run=$O/$arm
  mkdir -p "$run"
  "$Z" train --config configs/zeroshot/effnet-hybrid.yaml --output-dir "$run/train" \
    --set model="${MODEL[$arm]}" train.time_limit_min="$MIN" train.max_steps=100000 \
    train.eval_every_min=100000 train.save_every_min=5 train.progress=false \
    > "$run/train.log" 2>&1
  mkdir -p "$run/eval"
  score "$run/train/best" "$run/eval"
  echo "$arm done: $run"
done
