"""Coverage of certified (Learn-then-Test) against point-estimate thresholds, over cached runs.

    python benchmarks/calibration_coverage.py --synthetic --trials 200
    python benchmarks/calibration_coverage.py --student hf:runs/xs --pool 2000 --n-cal 300 --trials 200

No model is called while resampling (RouteLLM style): each draw takes `--n-cal` tasks to
calibrate on, chooses thresholds both ways, and checks them against the truth.

- `--synthetic`: a population where each threshold's true success is known in closed form
  (confidence c ~ U(0, 1), the student right with probability c, the teacher with 0.97).
- otherwise: the student and `world:teacher` run alone once on `--pool` validation-split tasks
  (cached in `--cache`); each draw calibrates on `--n-cal` of them and the rest of the pool is
  the truth. Offline world; validation split only, test is never touched.

Prints, from one run: how often each method misses the target (the certified one must stay at or
under delta), how often the certified method finds a setting at all, and the escalation the
guarantee costs.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from distillery.evaluation.calibrate import calibrate
from distillery.evaluation.certify import certify
from distillery.evaluation.runs import TierRun
from distillery.evaluation.simulate import simulate


def synthetic_pool(rng: random.Random, n: int) -> list[list[TierRun]]:
    student, teacher = [], []
    for i in range(n):
        c = rng.random()
        student.append(TierRun(f"t{i}", rng.random() < c, 0.0, 0.0, [c], [0.0], [0.0]))
        teacher.append(TierRun(f"t{i}", rng.random() < 0.97, 1.0, 0.0, [1.0], [1.0], [0.0]))
    return [student, teacher]


def synthetic_truth(threshold: float) -> tuple[float, float]:
    """(success relative to the teacher, share escalated) of a threshold on the population."""
    return ((1 - threshold ** 2) / 2 + threshold * 0.97) / 0.97, threshold


def world_pool(student: str, n: int, seed: int, cache: Path) -> list[list[TierRun]]:
    if cache.exists():
        data = json.loads(cache.read_text())
        return [[TierRun(**r) for r in tier] for tier in data]
    from distillery.evaluation.runs import run_tiers_alone
    from distillery.models import load_model
    from distillery.models.batching import batched
    from distillery.routing.config import CascadeConfig, TierConfig
    from distillery.world import SYSTEM_PROMPT
    from distillery.world.tasks import generate_tasks
    from distillery.world.tools import toolbox

    import asyncio

    config = CascadeConfig(tiers=[TierConfig(student, threshold=0.5), TierConfig("world:teacher")]).validate()
    models = [batched(load_model(t.model)) for t in config.tiers]  # concurrent tasks share one forward pass
    tasks = generate_tasks("validation", n, seed)
    alone = asyncio.run(run_tiers_alone(models, config.scorer_names(), tasks, tools=toolbox("validation"),
                                        concurrency=32, system=SYSTEM_PROMPT))
    runs = [[TierRun.from_trajectory(t) for t in tier] for tier in alone]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps([[vars(r) for r in tier] for tier in runs]))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--student", help="first tier for the world pool, e.g. hf:runs/xs")
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--cache", default="runs/coverage-pool.json")
    parser.add_argument("--n-cal", type=int, default=300)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--target", type=float, default=0.95, help="fraction of the teacher's success")
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    pool = None if args.synthetic else world_pool(args.student, args.pool, args.seed, Path(args.cache))
    found = certified_miss = point_miss = 0
    certified_escalation = point_escalation = 0.0
    for _ in range(args.trials):
        if pool is None:
            cal = synthetic_pool(rng, args.n_cal)
            truth = lambda thresholds: synthetic_truth(thresholds[0])  # noqa: E731
        else:
            order = rng.sample(range(len(pool[0])), len(pool[0]))
            chosen, rest = order[: args.n_cal], order[args.n_cal:]
            cal = [[tier[i] for i in chosen] for tier in pool]
            held = [[tier[i] for i in rest] for tier in pool]
            teacher = sum(r.success for r in held[-1]) / len(held[-1])

            def truth(thresholds, held=held, teacher=teacher):
                point = simulate(held, thresholds)
                return point.success / teacher, point.teacher_fraction

        result = certify(cal, target=args.target, delta=args.delta)
        if result.certified:
            found += 1
            success, escalated = truth(result.thresholds)
            certified_miss += success < args.target
            certified_escalation += escalated
        success, escalated = truth(calibrate(cal, target=args.target).thresholds)
        point_miss += success < args.target
        point_escalation += escalated
    print(json.dumps({
        "population": "synthetic" if pool is None else f"offline world validation pool of {len(pool[0])} ({args.student})",
        "trials": args.trials, "n_cal": args.n_cal, "target_x_teacher": args.target, "delta": args.delta,
        "certified_found_rate": found / args.trials,
        "certified_violation_rate": certified_miss / args.trials,
        "point_estimate_violation_rate": point_miss / args.trials,
        "certified_mean_escalation": certified_escalation / found if found else None,
        "point_estimate_mean_escalation": point_escalation / args.trials,
    }, indent=2))


if __name__ == "__main__":
    main()
