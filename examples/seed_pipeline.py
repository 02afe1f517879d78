"""The seed's "Try it", on distillery's public API: collect -> fine-tuning JSONL -> student with fallback.

    python examples/seed_pipeline.py             # Claude (claude-opus-4-6) as the teacher when ANTHROPIC_API_KEY is set
    python examples/seed_pipeline.py --offline   # everything on the offline world's models: no key, no network

The three functions are the seed's, unchanged in name and shape:

    collect_teacher_trajectories(queries, model)   distillery.collect
    build_finetune_jsonl(samples, path)            distillery.dataset
    run_student(query, model)                      distillery.routing

The agent's tools are the offline world's shop tools (products, stock, orders, units, dates), so
the same queries work with Claude and with the bundled world teacher. The student is the world's
smallest model, trained for a few steps on the JSONL (enough to show the flow, not to be good):
it answers when it is confident and hands the step to the teacher when it is not.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from distillery.collect import collect_teacher_trajectories
from distillery.dataset import build_finetune_jsonl
from distillery.distill.trainer import train_student
from distillery.errors import DistilleryError
from distillery.models import load_model
from distillery.routing import run_student
from distillery.world import SYSTEM_PROMPT
from distillery.world.tools import toolbox

CLAUDE = "anthropic:claude-opus-4-6"  # the official anthropic SDK, through distillery's provider
WORLD_TEACHER = "world:teacher"  # the bundled offline teacher (a small local transformers model)
STUDENT = "world:student-xs"

QUERIES = [
    "Hello. What can you do?",
    "How much does the Quartz Blender cost?",
    "Convert 337 kilograms to pounds.",
    "What is the status of order ORD-26091?",
    "How many Lunar Backpacks are in the Lima warehouse?",
    "Book me a flight to Paris.",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="use the offline world's teacher, no API key needed")
    parser.add_argument("--out", default="seed-pipeline", help="directory for train.jsonl and the student")
    parser.add_argument("--steps", type=int, default=30, help="training steps for the student")
    parser.add_argument("--threshold", type=float, default=0.5, help="escalate a step whose confidence is below this")
    parser.add_argument("--teacher", help="any teacher URI (openai:gpt-4o, hf:./dir); overrides the choice below")
    args = parser.parse_args()

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
    tools = toolbox()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 2. The teacher runs the agent loop (model -> tool calls -> tool results -> ... -> answer) on each query.
    trajectories = collect_teacher_trajectories(QUERIES, teacher_uri, tools, system=SYSTEM_PROMPT)
    for trajectory in trajectories:
        calls = ", ".join(call.name for call in trajectory.tool_calls) or "no tools"
        print(f"teacher  {trajectory.query!r}: {trajectory.final_answer!r} ({calls}, ${trajectory.cost_usd:.4f})")

    # 3. Trajectories become OpenAI chat fine-tuning JSONL (validated against OpenAI's format rules).
    #    skip_invalid drops (and reports) a trajectory with a malformed tool call instead of stopping.
    jsonl = out / "train.jsonl"
    report = build_finetune_jsonl(trajectories, jsonl, skip_invalid=True, min_examples=1)
    print(f"wrote {report.examples} examples to {jsonl}" + (f" (skipped {len(report.skipped)})" if report.skipped else ""))

    # 4. A small student learns from that file. Claude gives no logits, so this is sequence-level
    #    distillation (SFT on the teacher's text); `distillery demo` shows top-k logit KD offline.
    student_dir = train_student(STUDENT, jsonl, out=out / "student", signal="sequence", max_steps=args.steps,
                                batch_size=4, progress=False)
    student = load_model(f"hf:{student_dir}", max_new_tokens=160)
    local = teacher_uri.startswith(("world:", "hf:"))
    teacher = load_model(teacher_uri, **({"max_new_tokens": 160} if local else {}))

    # 5. The student answers; a step whose confidence is below the threshold goes to the teacher.
    for query in QUERIES:
        trajectory = run_student(query, student, fallback=teacher, threshold=args.threshold, tools=tools,
                                 system=SYSTEM_PROMPT, max_tokens=160)
        escalated = sum(step.escalated for step in trajectory.steps)
        who = "student" if not escalated else f"teacher ({escalated}/{len(trajectory.steps)} steps escalated)"
        print(f"student  {query!r}: {trajectory.final_answer!r}  <- {who}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DistilleryError as exc:  # a missing key, an unreachable API: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
