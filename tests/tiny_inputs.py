"""Random inputs at the tiny models' sizes: frames, proprio, action chunks, instructions."""
from __future__ import annotations

import numpy as np

S, K, A, P = 64, 8, 7, 8
TASKS = ["pick up the red block and place it in the basket", "push the yellow block to the left"]


def rng(seed=0):
    return np.random.default_rng(seed)


def frames(*lead, seed=0):
    return rng(seed).integers(0, 256, (*lead, S, S, 3), dtype=np.uint8)


def proprio(b, seed=0):
    return rng(seed).normal(0, 0.3, (b, P)).astype(np.float32)


def actions(b, seed=0):
    return rng(seed).uniform(-1, 1, (b, K, A)).astype(np.float32)


def instructions(b):
    return [TASKS[i % 2] for i in range(b)]
