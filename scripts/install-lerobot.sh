#!/usr/bin/env bash
# A small separate virtualenv, .venv-lerobot, holding LeRobot's own dataset reader; only
# tests/test_lerobot_format.py uses it, to prove that `worldenv export lerobot` writes what
# `lerobot.datasets.lerobot_dataset.LeRobotDataset` loads (the test skips while it is absent).
#
# Why separate: the lerobot release the package index serves (0.4.4) pins torch < 2.11, and the
# main .venv carries torch 2.13.0 alone. Here: the same CPU torch wheel, lerobot without its
# dependency pins plus just what `lerobot.datasets` imports, and torchcodec (LeRobot's default
# video decoder; 0.13 supports torch >= 2.11) over Debian's FFmpeg libraries. torchvision is
# left out: its wheels on the index are CUDA builds that do not load beside a CPU torch
# (tests/lerobot_load.py explains the stand-in). No CUDA build is pulled.
#
# Usage: bash scripts/install-lerobot.sh [VENV_DIR]   (default: .venv-lerobot in the repo root)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-lerobot}"
FFMPEG_LIBS=(libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8)

missing=()
for pkg in "${FFMPEG_LIBS[@]}"; do
    [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=()
    ((EUID == 0)) || SUDO=(sudo)
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" --no-deps lerobot==0.4.4 torchcodec==0.13.0
"${PIP[@]}" "av>=15,<16" "datasets>=4,<4.2" "huggingface-hub>=0.34.2,<0.36" "packaging>=24.2,<26" \
    "accelerate>=1.10,<2" jsonlines deepdiff termcolor "draccus==0.10.0" einops pandas pyarrow pillow numpy
"$VENV/bin/python" -c "import lerobot.datasets, torchcodec.decoders, torch; print('install-lerobot: torch', torch.__version__)"
