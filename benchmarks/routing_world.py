"""Offline-world routing benchmark: a two-tier and a three-tier cascade, calibrated then evaluated.

    python benchmarks/routing_world.py --student runs/xs-kd --middle runs/s-kd --n-val 200 --n-test 200

Calibrates thresholds on the validation split (target: 98% of the teacher's success), then
evaluates on the test split and prints, side by side from one run, the student, the teacher, the
calibrated cascade, a random router at the same escalation rate and the oracle. All figures are
"offline world"; costs use the stand-in prices of prices.toml (world.teacher = claude-opus-4-6).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from distillery.commands.routing import print_report
from distillery.evaluation.calibrate import calibrate_cascade
from distillery.evaluation.evaluate import evaluate
from distillery.evaluation.results import save_results
from distillery.routing.config import CascadeConfig, TierConfig, write_cascade_config
from distillery.world import SYSTEM_PROMPT
from distillery.world.tasks import generate_tasks
from distillery.world.tools import toolbox


def run(tiers: list[str], name: str, args) -> dict:
    config = CascadeConfig(
        tiers=[TierConfig(m, threshold=0.5, scorer=args.scorer) for m in tiers] + [TierConfig("world:teacher")],
        escalate=args.escalate, source=name,
    ).validate()
    val = generate_tasks("validation", args.n_val, args.seed)
    test = generate_tasks("test", args.n_test, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fit_scorer = str(out / f"{name}.scorer.json") if args.fit_scorer else None
    calibrated, result, _ = calibrate_cascade(config, val, tools=toolbox(), target=args.target, fit_scorer=fit_scorer,
                                              concurrency=args.concurrency, system=SYSTEM_PROMPT)
    write_cascade_config(calibrated, out / f"{name}.toml", header="benchmarks/routing_world.py")
    results = evaluate(test, calibrated, tools=toolbox(), system=SYSTEM_PROMPT, concurrency=args.concurrency,
                       seed=args.seed)
    save_results(results, out / f"{name}.json")
    print(f"\n=== {name}: tiers {tiers} -> world:teacher; calibrated thresholds {result.thresholds} ===")
    print_report(results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True, help="Smallest KD student, e.g. hf:runs/xs-kd")
    parser.add_argument("--middle", help="Optional middle tier for the three-tier cascade, e.g. hf:runs/s-kd")
    parser.add_argument("--scorer", default="logprob-mean")
    parser.add_argument("--fit-scorer", action="store_true",
                        help="fit a learned (logistic-regression) scorer for tier 1 on the validation split and route with it")
    parser.add_argument("--escalate", default="restart", choices=["step", "task", "restart"])
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--n-val", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--out", default="runs/bench-routing")
    args = parser.parse_args()
    summary = {"two_tier": run([args.student], "two-tier", args)}
    if args.middle:
        summary["three_tier"] = run([args.student, args.middle], "three-tier", args)
    print("\nratios (cascade / teacher):")
    for name, results in summary.items():
        rows = {r["name"].split(" (")[0]: r for r in results["rows"]}
        cascade, teacher = rows["cascade"], rows["teacher alone"]
        print(json.dumps({
            "cascade": name,
            "success_vs_teacher": cascade["success"] / teacher["success"] if teacher["success"] else None,
            "step_escalation_rate": cascade["step_escalation_rate"],
            "cost_vs_teacher": cascade["cost_per_1k_usd"] / teacher["cost_per_1k_usd"] if teacher["cost_per_1k_usd"] else None,
            "apgr": results["routing"]["apgr"], "apgr_random": results["routing"]["apgr_random"],
            "random_router_success": rows.get("random router", {}).get("success"),
        }))


if __name__ == "__main__":
    main()
