#!/usr/bin/env bash
# Debian packages the tests need beyond Python: docker-compose (offline `config -q` check of
# docker-compose.yml) and EGL/Mesa (headless rendering for the LIBERO extra). Idempotent:
# installs only what is missing, runs `apt-get update` at most once, needs root (or sudo).
set -euo pipefail

PACKAGES=(docker-compose libegl1 libegl-mesa0 libgl1-mesa-dri)

missing=()
for pkg in "${PACKAGES[@]}"; do
    # dpkg-query prints "install ok installed" only for a fully installed package.
    if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "ci-system-deps: all present (${PACKAGES[*]})"
    exit 0
fi

SUDO=()
if ((EUID != 0)); then
    command -v sudo > /dev/null || { echo "ci-system-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo)
fi

echo "ci-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
