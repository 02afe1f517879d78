"""The seed's "Try it", on distillery's public API: collect -> fine-tuning JSONL -> student with fallback.

    python examples/seed_pipeline.py             # Claude (claude-opus-4-6) as the teacher when ANTHROPIC_API_KEY is set
    python examples/seed_pipeline.py --offline   # everything on the offline world's models: no key, no network

The three functions are the seed's, unchanged in name and shape:

    collect_teacher_trajectories(queries, model)   distillery.collect
    build_finetune_jsonl(samples, path)            distillery.dataset
    run_student(query, model)                      distillery.routing

The agent's tools are the offline world's shop tools (products, stock, orders, units, dates), so
the same queries work with Claude and with the bundled world teacher. The queries and the training
tasks are from the world's train split and run against its sealed tools; the held-out summary
runs test-split tasks against the test split's tools.

`--offline` tells `distillery demo`'s story at a smaller scale: the teacher solves the queries and
`--n-train` training tasks, the student is cut out of the teacher (`init_student`, structured
pruning) and trained briefly on the teacher's successes, then the student alone, the teacher alone
and the student with the teacher as fallback run `--n-test` held-out tasks: success, the share of
tasks the student answered, cost, and a random router sending the same share to the teacher.
With Claude, the student is the world's smallest model trained from random weights (Claude's
weights cannot be pruned), on the queries alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from distillery.collect import collect_teacher_trajectories
from distillery.dataset import build_finetune_jsonl
from distillery.demo import quiet_library_output
from distillery.distill.config import DistillationConfig
from distillery.distill.init import init_student
from distillery.distill.trainer import train_student
from distillery.errors import DistilleryError
from distillery.models import load_model
from distillery.routing import run_student
from distillery.world import SYSTEM_PROMPT
from distillery.world.tasks import generate_tasks
from distillery.world.tools import toolbox

CLAUDE = "anthropic:claude-opus-4-6"  # the official anthropic SDK, through distillery's provider
WORLD_TEACHER = "world:teacher"  # the bundled offline teacher (a small local transformers model)
STUDENT = "world:student-xs"  # the student trained from random weights when the teacher is a black box

# World train-split questions (their entities are the train split's; distillery demo's queries.json has more).
QUERIES = [
    "Hello. What can you do?",
    "How much does the Quartz Mixer cost?",
    "Convert 340 kilograms to pounds.",
    "What is the status of order ORD-10475?",
    "How many Cobalt Backpacks are in the Lima warehouse?",
    "Book me a flight to Paris.",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="use the offline world's teacher, no API key needed")
    parser.add_argument("--out", default="seed-pipeline", help="directory for train.jsonl and the student")
    parser.add_argument("--steps", type=int, default=30, help="training steps for the student")
    parser.add_argument("--n-train", type=int, default=64, help="--offline: world train tasks the teacher also solves")
    parser.add_argument("--n-test", type=int, default=20, help="--offline: held-out world test tasks for the summary")
    parser.add_argument("--layers", type=int, default=2, help="--offline: decoder layers the pruned student keeps")
    parser.add_argument("--threshold", type=float, default=0.5, help="escalate a step whose confidence is below this")
    parser.add_argument("--teacher", help="any teacher URI (openai:gpt-4o, hf:./dir); overrides the choice below")
    args = parser.parse_args()
    quiet_library_output()  # no per-load progress bars between the lines below

    # 1. Pick the teacher: Claude when a key is set (and --offline is not), else the world teacher.
    if args.teacher:
        teacher_uri = args.teacher
    elif args.offline:
        teacher_uri = WORLD_TEACHER
    elif os.environ.get("ANTHROPIC_API_KEY"):
        teacher_uri = CLAUDE
    else:
        print("ANTHROPIC_API_KEY is not set: using the offline world teacher (pass --offline to say so).")
        teacher_uri = WORLD_TEACHER
    offline = teacher_uri.startswith(("world:", "hf:"))  # a teacher with local weights: it can be pruned
    tools = toolbox("train")  # sealed: only the train split's products and orders
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 2. The teacher runs the agent loop (model -> tool calls -> tool results -> ... -> answer) on each query.
    trajectories = collect_teacher_trajectories(QUERIES, teacher_uri, tools, system=SYSTEM_PROMPT)
    for trajectory in trajectories:
        calls = ", ".join(call.name for call in trajectory.tool_calls) or "no tools"
        print(f"teacher  {trajectory.query!r}: {trajectory.final_answer!r} ({calls}, ${trajectory.cost_usd:.4f})")
    if offline and args.n_train:
        # More training data, for free offline: world train tasks carry checkers, so only successes are kept below.
        tasks = generate_tasks("train", args.n_train, seed=0)
        trajectories += collect_teacher_trajectories(tasks, teacher_uri, tools, concurrency=16)

    # 3. Trajectories become OpenAI chat fine-tuning JSONL (validated against OpenAI's format rules).
    #    skip_invalid drops (and reports) a trajectory with a malformed tool call instead of stopping.
    jsonl = out / "train.jsonl"
    report = build_finetune_jsonl(trajectories, jsonl, skip_invalid=True, min_examples=1, success_only=offline)
    print(f"wrote {report.examples} examples to {jsonl}" + (f" (skipped {len(report.skipped)})" if report.skipped else ""))

    # 4. A small student learns from that file. Offline, it starts as a slice of the teacher (the layers
    #    that matter most on this data), so training recovers what the cut lost instead of starting from
    #    nothing. Claude gives no logits and no weights: sequence-level distillation (SFT on its text) of a
    #    student trained from random weights; `distillery demo` shows top-k logit KD offline.
    student_start = STUDENT
    if offline:
        pruned = init_student(teacher_uri, jsonl, out=out / "student-init", layers=args.layers, n_calibration=64)
        print(f"pruned the teacher to {pruned.parameters['student']:,} of {pruned.parameters['source']:,} parameters "
              f"(layers {pruned.plan['layers']} kept)")
        student_start = f"hf:{out / 'student-init'}"  # its init.json gives the trainer a recovery learning rate
    config = DistillationConfig(signal="sequence", max_steps=args.steps, batch_size=4 if not offline else 16, progress=False)
    student_dir = train_student(student_start, jsonl, out=out / "student", config=config)
    student = load_model(f"hf:{student_dir}", max_new_tokens=160)
    teacher = load_model(teacher_uri, **({"max_new_tokens": 160} if offline else {}))

    # 5. The student answers; a step whose confidence is below the threshold goes to the teacher.
    for query in QUERIES:
        trajectory = run_student(query, student, fallback=teacher, threshold=args.threshold, tools=tools,
                                 system=SYSTEM_PROMPT, max_tokens=160)
        escalated = sum(step.escalated for step in trajectory.steps)
        who = "student" if not escalated else f"teacher ({escalated}/{len(trajectory.steps)} steps escalated)"
        print(f"student  {query!r}: {trajectory.final_answer!r}  <- {who}")

    # 6. Offline, the trade-off on held-out tasks: each tier alone, then the student with the teacher as fallback.
    if offline and args.n_test:
        held_out_summary(student, teacher, generate_tasks("test", args.n_test, seed=0), args.threshold)
    return 0


def held_out_summary(student, teacher, tasks, threshold: float) -> None:
    """Success, the share of tasks the student answered, and cost: student, teacher, cascade, random router."""
    tools = toolbox("test")  # sealed: the held-out tasks see only the test split's rows

    def run(model, fallback=None):
        return [run_student(task, model, fallback=fallback, threshold=threshold, tools=tools, system=SYSTEM_PROMPT,
                            escalate="restart", max_tokens=160) for task in tasks]

    rows = {"student alone": run(student), "teacher alone": run(teacher), "student + fallback": run(student, teacher)}
    success = {name: sum(bool(t.outcome and t.outcome.success) for t in runs) / len(tasks) for name, runs in rows.items()}
    cost = {name: sum(t.cost_usd for t in runs) / len(tasks) for name, runs in rows.items()}
    by_student = {"student alone": 1.0, "teacher alone": 0.0,
                  "student + fallback": sum(not any(s.escalated for s in t.steps) for t in rows["student + fallback"])
                  / len(tasks)}
    print(f"held-out: {len(tasks)} world test tasks (offline world; costs are stand-in prices from prices.toml)")
    for name in rows:
        share = f"{cost[name] / cost['teacher alone']:.0%} of the teacher's" if cost["teacher alone"] else "-"
        print(f"  {name:<20} success {success[name]:6.1%}  answered by the student {by_student[name]:6.1%}  "
              f"${1000 * cost[name]:.3f} per 1k tasks ({share})")
    escalated = 1 - by_student["student + fallback"]
    expected = (1 - escalated) * success["student alone"] + escalated * success["teacher alone"]
    print(f"  random router sending the same {escalated:.0%} of tasks to the teacher: {expected:.1%} success (expected)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DistilleryError as exc:  # a missing key, an unreachable API: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
