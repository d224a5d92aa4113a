"""worldenv: a learned world model served as a simulator for RL post-training of VLA policies."""

__version__ = "0.1.0"
