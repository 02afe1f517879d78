"""Early escalation against full generation, side by side, on offline-world validation tasks.

    python benchmarks/early_escalation.py --student hf:distillery-demo/student --n 100 --threshold 0.5

Runs the same two-tier cascade (the student, then `world:teacher`; scorer `logprob-min`; greedy)
twice over the same tasks: once generating every student proposal in full, once stopping a
proposal as soon as the scorer must reject it. Prints whether every routing decision and answer is
identical, and the student tokens and student wall time per escalated proposal in both runs.
"""

from __future__ import annotations

import argparse
import json
import time

from distillery.models import load_model
from distillery.routing.cascade import Cascade
from distillery.world import SYSTEM_PROMPT
from distillery.world.tasks import generate_tasks
from distillery.world.tools import toolbox


def run(student, teacher, tasks, threshold: float, early: bool):
    cascade = Cascade([student, teacher], [threshold], toolbox(), scorer="logprob-min", system=SYSTEM_PROMPT,
                      early_escalation=early)
    started = time.perf_counter()
    trajectories = [cascade.run(task) for task in tasks]
    return trajectories, time.perf_counter() - started


def rejected_student_calls(trajectories):
    calls = []
    for t in trajectories:
        for step in t.steps:
            doubted = {r.tier for r in step.routing.rejected}
            calls += [c for c in step.routing.calls if c.tier == 0 and 0 in doubted]
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    student, teacher = load_model(args.student), load_model("world:teacher")
    tasks = generate_tasks("validation", args.n, seed=args.seed)
    run(student, teacher, tasks[:3], args.threshold, False)  # warm-up
    full, full_s = run(student, teacher, tasks, args.threshold, False)
    early, early_s = run(student, teacher, tasks, args.threshold, True)

    def decisions(trajectories):
        return [[(s.producer, s.escalated, s.text, [c.canonical() for c in s.tool_calls]) for s in t.steps]
                for t in trajectories]

    out = {"student": args.student, "tasks": args.n, "threshold": args.threshold,
           "identical_decisions": decisions(full) == decisions(early),
           "identical_answers": [t.final_answer for t in full] == [t.final_answer for t in early],
           "wall_s_full": round(full_s, 1), "wall_s_early": round(early_s, 1)}
    for name, trajectories in (("full", full), ("early", early)):
        calls = rejected_student_calls(trajectories)
        out[f"rejected_proposals_{name}"] = len(calls)
        out[f"student_tokens_per_rejected_{name}"] = round(sum(c.usage.output_tokens for c in calls) / max(len(calls), 1), 1)
        out[f"student_s_per_rejected_{name}"] = round(sum(c.latency_s for c in calls) / max(len(calls), 1), 4)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
