"""reports/experiment.md (stub until the stages finish)"""
from __future__ import annotations


def write(config, root):
    return root
