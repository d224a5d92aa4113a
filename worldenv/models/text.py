"""Instruction tokenizer and embedding for the tiny models.

Words are lowercased and hashed into a fixed vocabulary with CRC-32, which is the same in every
process (Python's `hash` is salted per process, so it would break saved checkpoints). Id 0 is
padding. The paper-scale models use a transformers tokenizer instead: their checkpoint's own, or,
for a random-weights build, `word_tokenizer` (made here, no download).
"""
from __future__ import annotations

import re
import zlib

import torch

_WORD = re.compile(r"[a-z0-9]+")
SPECIAL = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
IMAGE_TOKEN = "<image>"


def word_tokenizer(words: list[str]):
    """A lowercase word-level `PreTrainedTokenizerFast` over `words`, with LLaVA's special tokens
    (<unk>, <s> BOS, </s> EOS, <pad>) and its image token: a random-weights build's tokenizer."""
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {w: i for i, w in enumerate(dict.fromkeys([*SPECIAL.values(), IMAGE_TOKEN, *words]))}
    core = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL["unk_token"]))
    core.normalizer, core.pre_tokenizer = normalizers.Lowercase(), pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL,
                                                extra_special_tokens={"image_token": IMAGE_TOKEN})


def word_id(word: str, vocab_size: int) -> int:
    """Stable id in [1, vocab_size) of one lowercase word."""
    return 1 + zlib.crc32(word.encode("utf-8")) % (vocab_size - 1)


def tokenize(instructions: list[str], vocab_size: int, max_tokens: int,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Instructions -> (token ids (B, L) int64, mask (B, L) bool), L = max_tokens, 0-padded."""
    if isinstance(instructions, str):
        raise ValueError("instructions: expected a list of strings, got one string")
    ids = torch.zeros(len(instructions), max_tokens, dtype=torch.long)
    for row, text in enumerate(instructions):
        words = _WORD.findall(str(text).lower())[:max_tokens]
        if words:
            ids[row, :len(words)] = torch.tensor([word_id(w, vocab_size) for w in words])
    return ids.to(device), (ids != 0).to(device)


class InstructionEmbedding(torch.nn.Module):
    """Mean of learned token embeddings over the unmasked tokens, then a projection."""

    def __init__(self, vocab_size: int, width: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, width, padding_idx=0)
        self.proj = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, width))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) int64, mask (B, L) -> (B, width)."""
        weights = mask.to(self.embed.weight.dtype).unsqueeze(-1)   # (B, L, 1)
        summed = (self.embed(tokens) * weights).sum(dim=1)          # (B, width)
        return self.proj(summed / weights.sum(dim=1).clamp(min=1.0))


HASHED = "hashed"


class InstructionFeatures(torch.nn.Module):
    """Instructions (B strings) -> (B, width): a frozen pretrained sentence embedding (any
    encoder `language.encoder` loads; not part of the state dict) or hashed words, then a
    trainable projection."""

    def __init__(self, encoder: str, width: int, text_dim: int = 384, vocab_size: int = 1024, max_tokens: int = 24):
        super().__init__()
        self.encoder, self.text_dim, self.vocab_size, self.max_tokens = encoder, text_dim, vocab_size, max_tokens
        if encoder == HASHED:
            self.words = InstructionEmbedding(vocab_size, width)
            return
        from worldenv.models import language
        self.sentence = language.encoder(encoder)  # loaded now (2-3 s, once per process), shared, frozen
        if self.sentence.dim != text_dim:
            raise ValueError(f"text encoder {encoder!r} gives {self.sentence.dim}-d embeddings, the model expects {text_dim}")
        self.proj = torch.nn.Sequential(torch.nn.Linear(text_dim, width), torch.nn.LayerNorm(width))

    def forward(self, instructions: list[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        if self.encoder == HASHED:
            return self.words(*tokenize(instructions, self.vocab_size, self.max_tokens, device))
        embedded = torch.from_numpy(self.sentence.encode(list(instructions))).to(device, dtype)   # (B, D)
        return self.proj(embedded)
