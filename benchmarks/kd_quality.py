"""Quality study (offline world): SFT on expert text vs SFT on teacher text vs KD from teacher logits.

The smallest student tier (world:student-xs, trained from scratch) is trained three ways on the
same tasks, for the same steps, with the same seeds, and scored with the world's evaluation
(success by tier on held-out test tasks, greedy decoding through the agent loop):

    sft-expert   SFT on the expert's trajectories
    sft-teacher  SFT on the bundled teacher's (successful) trajectories
    kd-online    KD from the teacher's logits (online, dense) on the same teacher trajectories:
                 L = alpha*CE + (1-alpha)*T^2*KL(teacher||student)

The task set is the train-split tasks the teacher solved, so all three methods see the same
queries. Each run writes runs/<method>-seed<k>/eval.json; `--report` turns them into the table
in docs/distillation.md. Runs whose eval.json exists are skipped, so the study resumes.

    python benchmarks/kd_quality.py --out /tmp/kd_quality            # train + evaluate everything
    python benchmarks/kd_quality.py --out /tmp/kd_quality --report   # print the markdown table
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

METHODS = ("sft-expert", "sft-teacher", "kd-online")
TIERS = ("none", "easy", "medium", "hard")


def prepare(out: Path, n_train: int, teacher: str) -> None:
    """Expert and teacher trajectories on the same train tasks (the ones the teacher solved)."""
    from distillery.agent import Agent
    from distillery.distill.trainer import chat_rows
    from distillery.models import load_model
    from distillery.world import SYSTEM_PROMPT
    from distillery.world.expert import solve
    from distillery.world.tasks import generate_tasks
    from distillery.world.tools import toolbox

    if (out / "teacher.jsonl").exists():
        return
    tasks = generate_tasks("train", n_train, seed=11)
    agent = Agent(load_model(teacher), toolbox(), system=SYSTEM_PROMPT, max_steps=8)
    expert_rows, teacher_rows, solved = [], [], 0
    started = time.perf_counter()
    for index, task in enumerate(tasks):
        trajectory = agent.run(task)
        if trajectory.outcome and trajectory.outcome.success:
            solved += 1
            teacher_rows.extend(chat_rows([trajectory]))
            expert_rows.extend(chat_rows([solve(task)]))
        if index % 50 == 0:
            print(f"teacher data {index}/{len(tasks)} solved={solved} {time.perf_counter() - started:.0f}s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("expert", expert_rows), ("teacher", teacher_rows)):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    meta = {"n_train_tasks": n_train, "teacher_solved": solved, "seconds": round(time.perf_counter() - started, 1)}
    (out / "data.json").write_text(json.dumps(meta, indent=2))
    print(meta, flush=True)


def run_one(out: Path, method: str, seed: int, args: argparse.Namespace) -> None:
    from distillery.distill.trainer import train_student
    from distillery.models.hf import HFModel
    from distillery.world.evaluate import evaluate_model
    from distillery.world.tasks import generate_tasks

    run_dir = out / "runs" / f"{method}-seed{seed}"
    if (run_dir / "eval.json").exists():
        return
    data = out / ("expert.jsonl" if method == "sft-expert" else "teacher.jsonl")
    kd = method.startswith("kd")
    started = time.perf_counter()
    train_student(
        args.student,
        data,
        out=run_dir,
        teacher=args.teacher if kd else None,
        signal="online" if kd else "sequence",
        alpha=args.alpha,
        temperature=args.temperature,
        divergence=args.divergence,
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        max_length=512,
        seed=seed,
        logging_steps=25,
        progress=False,
        warmup_steps=20,
        threads=1,
        lr_scheduler_type="cosine",
    )
    train_seconds = time.perf_counter() - started
    report, _ = evaluate_model(HFModel(str(run_dir)), generate_tasks("test", args.n_test, seed=0))
    report.update(method=method, seed=seed, train_seconds=round(train_seconds, 1), steps=args.steps,
                  alpha=args.alpha, temperature=args.temperature, divergence=args.divergence)
    (run_dir / "eval.json").write_text(json.dumps(report, indent=2))
    tiers = {t: round(v["success"], 3) for t, v in report["by_tier"].items()}
    print(f"{method} seed={seed} success={report['success']:.3f} {tiers} train={train_seconds:.0f}s", flush=True)


def evaluate_teacher(out: Path, args: argparse.Namespace) -> None:
    from distillery.models import load_model
    from distillery.world.evaluate import evaluate_model
    from distillery.world.tasks import generate_tasks

    path = out / "teacher_eval.json"
    if not path.exists():
        report, _ = evaluate_model(load_model(args.teacher), generate_tasks("test", args.n_test, seed=0))
        path.write_text(json.dumps(report, indent=2))


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {spread:.2f}"


def report(out: Path) -> str:
    rows = []
    header = "| method | " + " | ".join(TIERS) + " | all | seeds |"
    rows.append(header)
    rows.append("|" + "---|" * (len(TIERS) + 3))
    teacher_path = out / "teacher_eval.json"
    for method in METHODS:
        evals = [json.loads(p.read_text()) for p in sorted((out / "runs").glob(f"{method}-seed*/eval.json"))]
        if not evals:
            continue
        cells = [_cell([e["by_tier"][t]["success"] for e in evals if t in e["by_tier"]]) for t in TIERS]
        rows.append(f"| {method} | " + " | ".join(cells) + f" | {_cell([e['success'] for e in evals])} | {len(evals)} |")
    if teacher_path.exists():
        t = json.loads(teacher_path.read_text())
        cells = [f"{t['by_tier'][tier]['success']:.2f}" if tier in t["by_tier"] else "–" for tier in TIERS]
        rows.append("| teacher (reference) | " + " | ".join(cells) + f" | {t['success']:.2f} | – |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/kd_quality"))
    parser.add_argument("--student", default="world:student-xs")
    parser.add_argument("--teacher", default="world:teacher")
    parser.add_argument("--n-train", type=int, default=800, help="train-split tasks offered to the teacher")
    parser.add_argument("--n-test", type=int, default=120, help="held-out test tasks per evaluation")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--divergence", default="forward_kl")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--report", action="store_true", help="only print the table from finished runs")
    args = parser.parse_args()
    if args.report:
        print(report(args.out))
        return
    prepare(args.out, args.n_train, args.teacher)
    evaluate_teacher(args.out, args)
    for seed in args.seeds:
        for method in args.methods:
            run_one(args.out, method, seed, args)
    print(report(args.out))


if __name__ == "__main__":
    main()
