#!/usr/bin/env bash
# One line per evaluated row under OUT (scripts/eval_model_card.sh): instances, AP@0.5 and
# F1@0.5 (image mean / pooled, class-agnostic).
#   bash scripts/summarize_evals.sh OUT [OUT2 ...]
for O in "$@"; do
  for f in "$O"/*/eval/metrics.md; do
    row=$(basename "$(dirname "$(dirname "$f")")")
    get() { grep -E "^\| $1 " "$f" | head -1 | awk -F'|' '{gsub(/ /,""); print $3"/"$4}'; }
    printf "%-22s n_pred %-12s AP@0.5 %-16s F1@0.5 %s\n" "$row" "$(get n_pred)" "$(get ap50)" \
        "$(get f1_50)"
  done
done
