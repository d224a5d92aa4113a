"""scripts/grasp_probe.py's verdict rule: without the probe it is the grasp gate's own, and the
probe can only take verdicts away (a run it calls empty is never done)."""
from __future__ import annotations

import importlib.util
import pathlib

import numpy as np

from worldenv.models import grasp_gate

SPEC = importlib.util.spec_from_file_location("grasp_probe", pathlib.Path(__file__).parents[1] / "scripts" / "grasp_probe.py")
probe = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(probe)


def test_the_probe_rule_is_the_gate_without_the_probe_and_only_removes_verdicts():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        p = rng.random(n)
        commands = rng.choice([-1.0, 1.0], n)
        gaps = rng.choice([0.002, 0.03], n)
        for width in (0.0, 0.0175):
            gate = grasp_gate.first_done(p, commands, gaps, 0.5, width)
            assert probe.first_done(p, commands, gaps, None, 0.5, width) == gate
            assert probe.first_done(p, commands, gaps, np.ones(n), 0.5, width) == gate
        held = rng.random(n)
        with_probe = probe.first_done(p, commands, gaps, held, 0.5, 0.0175)
        assert with_probe is None or with_probe >= grasp_gate.first_done(p, commands, gaps, 0.5, 0.0175)
        assert probe.first_done(p, commands, gaps, np.zeros(n), 0.5, 0.0175) is None


def test_the_probe_reads_the_settled_chunks_of_the_last_closed_run():
    p = np.array([0.0, 0.0, 0.0, 0.9])
    commands = np.array([1.0, 1.0, 1.0, 1.0])
    gaps = np.full(4, 0.03)
    # the run's first chunk (still closing) is not read: empty there, held after it
    assert probe.first_done(p, commands, gaps, np.array([0.0, 0.9, 0.9, 0.9]), 0.5, 0.0175) == 3
    assert probe.first_done(p, commands, gaps, np.array([0.9, 0.1, 0.1, 0.9]), 0.5, 0.0175) is None
    # a reopened gripper starts a new run at the next close
    commands = np.array([1.0, 1.0, -1.0, 1.0, 1.0, 1.0])
    p = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.9])
    gaps = np.full(6, 0.03)
    assert probe.first_done(p, commands, gaps, np.array([0.9, 0.1, 0.9, 0.1, 0.9, 0.9]), 0.5, 0.0175) == 5
