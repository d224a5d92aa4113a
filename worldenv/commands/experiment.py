"""`worldenv experiment`: SFT -> RL in imagination -> both measured in real LIBERO -> reports/experiment.md.
Resumable: run it again and finished stages are skipped."""
from __future__ import annotations

from worldenv.commands import flags
from worldenv.pipeline.experiment import ExperimentConfig


def _run(config: ExperimentConfig) -> int:
    from worldenv.pipeline import experiment, experiment_report
    root = experiment.run(config)
    path = experiment_report.write(config, root)
    print(f"report -> {path}", flush=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("experiment", help="SFT vs RL in imagination, both evaluated in real LIBERO -> reports/experiment.md")
    flags.command(p, "experiment", ExperimentConfig, _run, errors=(RuntimeError,))
