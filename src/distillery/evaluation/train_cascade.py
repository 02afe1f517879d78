"""Cascade distillation: each tier is distilled from the tier above it, on the tasks that reach it.

    trained = train_cascade(load_cascade_config("cascade.toml"), tasks, tools=toolbox(), out="runs/cascade")

Order is top-down, because each tier learns from the one above it: the strongest student learns
from the teacher, the next from that freshly trained student, and so on down to tier 1.

"The tasks that reach a tier" are the tasks the tier *below* it, as the config names it now,
escalates at the config's threshold (a step `routing.decision.should_escalate` rejects); tier 1 sees
every task. In a first round, with untrained lower tiers, that is nearly every task; run it again
with the trained tiers in the config (the flywheel) and each tier then learns on exactly the hard
cases that reach it. Only trajectories the task's checker accepts are used as training data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillery.distill.config import DistillationConfig
from distillery.errors import ConfigError
from distillery.models import load_model
from distillery.evaluation.runs import TierRun, run_tiers_alone
from distillery.routing.config import CascadeConfig, load_tier_models, write_cascade_config


def _trainer():
    try:
        from distillery.distill.trainer import train_student
    except ImportError as exc:
        raise ConfigError(f"distillery cascade train requires the trainer (distillery.distill.trainer): {exc}") from None
    return train_student


def train_cascade(
    config: CascadeConfig,
    tasks: Sequence[Any],
    *,
    tools: Any,
    out: str | Path,
    signal: str = "sequence",
    max_steps: int | None = None,
    concurrency: int = 4,
    seed: int = 0,
    system: str | None = None,
    progress: Any = None,
    write_config: str | Path | None = None,
    **train_options: Any,
) -> list[dict[str, Any]]:
    """Train every student tier (all but the last) top-down; returns one record per tier, cheapest first."""
    import copy

    train_student = _trainer()
    if len(config.tiers) < 2:
        raise ConfigError(f"{config.source}: a cascade to train needs at least a student tier and a teacher")
    out = Path(out)
    models = load_tier_models(config)
    scorers = config.scorer_names()
    source_model, source_name = models[-1], config.tiers[-1].model
    records: list[dict[str, Any]] = [{} for _ in config.tiers[:-1]]
    trained_config = copy.deepcopy(config)
    for index in range(len(config.tiers) - 2, -1, -1):
        reaching = list(tasks)
        if index > 0:
            below = asyncio.run(run_tiers_alone([models[index - 1]], [scorers[index - 1]], reaching, tools=tools,
                                                concurrency=concurrency, progress=progress, system=system))[0]
            threshold = config.tiers[index - 1].threshold or 0.0
            reaching = [task for task, t in zip(reaching, below)
                        if TierRun.from_trajectory(t).first_doubt(threshold) is not None]
        collected = asyncio.run(run_tiers_alone([source_model], [None], reaching, tools=tools, concurrency=concurrency,
                                                progress=progress, system=system))[0]
        good = [t for t in collected if t.outcome is not None and t.outcome.success]
        if not good:
            raise ConfigError(
                f"tier {index + 1}: {source_name} solved none of the {len(reaching)} tasks that reach this tier; nothing to learn from"
            )
        directory = out / f"tier{index + 1}"
        train_student(
            config.tiers[index].model, good, out=directory, teacher=(source_name if signal == "online" else None),
            config=DistillationConfig(signal=signal, max_steps=max_steps, seed=seed, **train_options),
        )
        records[index] = {"model": f"hf:{directory}", "source": source_name, "n_tasks": len(reaching),
                          "n_trajectories": len(good), "signal": signal}
        trained_config.tiers[index].model = f"hf:{directory}"
        trained_config.tiers[index].options = {}
        source_name = f"hf:{directory}"
        source_model = load_model(source_name)
    if write_config:
        trained_config.calibration = {}
        trained_config.source = str(write_config)
        write_cascade_config(trained_config, write_config,
                             header="Written by `distillery cascade train`; thresholds are not yet calibrated for the new tiers.")
    return records
