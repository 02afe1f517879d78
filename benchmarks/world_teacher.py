"""Offline world: the bundled teacher's load + one-task latency, and teacher vs an SFT student side by side.

    python benchmarks/world_teacher.py --student hf:runs/xs-sft --n 200

Prints (1) seconds to load `world:teacher` (after torch/transformers are imported, which is timed
separately) and answer one easy test task, in a fresh process;
(2) success by tier for the teacher and the student on the same test tasks (greedy, same seed),
with the student/teacher ratio per tier. All figures are offline-world figures.
"""

from __future__ import annotations

import argparse
import json
import time

from distillery.agent import Agent
from distillery.models import load_model
from distillery.world import SYSTEM_PROMPT
from distillery.world.evaluate import evaluate_model
from distillery.world.tasks import TIERS, generate_tasks
from distillery.world.tools import toolbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default=None, help="student model URI, e.g. hf:runs/xs-sft (optional)")
    parser.add_argument("--n", type=int, default=200, help="test tasks per model")
    parser.add_argument("--seed", type=int, default=0, help="task seed")
    parser.add_argument("--json", default=None, help="write all figures to this JSON file")
    args = parser.parse_args()

    started = time.perf_counter()
    from transformers import LlamaForCausalLM  # noqa: F401 - imports are timed apart from loading the weights

    import distillery.models.hf  # noqa: F401

    imported = time.perf_counter()
    print(f"import torch + transformers + provider: {imported - started:.2f} s")
    started = time.perf_counter()
    teacher = load_model("world:teacher")
    loaded = time.perf_counter()
    task = generate_tasks("test", 1, seed=args.seed, tiers=["easy"])[0]
    trajectory = Agent(teacher, toolbox(), system=SYSTEM_PROMPT).run(task)
    answered = time.perf_counter()
    print(f"world:teacher load {loaded - started:.2f} s + one easy task {answered - loaded:.2f} s "
          f"= {answered - started:.2f} s (success={trajectory.outcome.success})")

    if args.n <= 0:
        return
    tasks = generate_tasks("test", args.n, seed=args.seed)
    results = {"load_s": loaded - started, "one_task_s": answered - loaded}
    models = [("teacher", teacher)] + ([("student", load_model(args.student))] if args.student else [])
    for name, model in models:
        report, _ = evaluate_model(model, tasks)
        results[name] = report
    header = f"{'tier':<8}" + "".join(f"{name:>10}" for name, _ in models) + ("   student/teacher" if args.student else "")
    print(f"offline world, test split, n={args.n}, seed={args.seed}, greedy")
    print(header)
    for tier in [*TIERS, "overall"]:
        row = []
        for name, _ in models:
            report = results[name]
            row.append(report["success"] if tier == "overall" else report["by_tier"].get(tier, {}).get("success", float("nan")))
        ratio = f"   {row[1] / row[0]:.2f}" if args.student and row[0] else ""
        print(f"{tier:<8}" + "".join(f"{100 * v:>9.1f}%" for v in row) + ratio)
    for name, _ in models:
        print(f"{name}: tool-call accuracy {100 * results[name]['tool_call_accuracy']:.1f}%, "
              f"{results[name]['seconds_per_task']:.2f} s/task")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
