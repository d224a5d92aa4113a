"""`worldenv pipeline`: LIBERO demos -> policy, world model and reflector -> measured against the
real simulator -> reports/models.md. Resumable: run it again and finished stages are skipped."""
from __future__ import annotations

from worldenv.commands import flags
from worldenv.pipeline.models import PipelineConfig


def _run(config: PipelineConfig) -> int:
    from worldenv.pipeline import models, models_report
    chosen = models.run(config)
    if chosen is not None:
        models_report.write(config, config.root, chosen)
    return 0


def register(sub) -> None:
    p = sub.add_parser("pipeline", help="LIBERO data -> the three models -> measured -> reports/models.md")
    flags.command(p, "pipeline", PipelineConfig, _run, errors=(RuntimeError,))
