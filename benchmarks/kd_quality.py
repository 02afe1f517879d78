"""Quality study (offline world): SFT on expert text vs SFT on teacher text vs KD from teacher logits.

The smallest student tier (world:student-xs, trained from scratch) is trained three ways on the
same tasks, for the same steps, with the same seeds, and scored with the world's evaluation
(success by tier on held-out test tasks, greedy decoding through the agent loop):

    sft-expert   SFT on the expert's trajectories for N train-split tasks
    sft-teacher  SFT on the teacher's own (successful, greedy) trajectories for the same tasks
    kd-offline   KD from the teacher's logits on the expert's trajectories (the sft-expert text),
                 offline: the teacher's top-20 logprobs at every assistant token, computed once
                 per run with a forward pass (what vLLM's prompt_logprobs would give), then
                 L = alpha*CE + (1-alpha)*T^2*KL(teacher||student) over top-20 + a tail bucket.
                 Same text as sft-expert: the only difference is the teacher's soft targets.
    kd-online    (optional, --methods) the same with dense teacher logits computed every batch

Every run is scored twice on the same held-out test tasks: free-running through the agent loop
(success by tier, the world's own evaluation), and teacher-forced on the expert's trajectories for
those tasks (per-token NLL and the share of assistant turns whose every token is the student's
argmax, by tier), which separates methods long before a tiny student solves whole tasks. Each run
writes runs/<method>-seed<k>/eval.json; `--report` turns them into the tables in
docs/distillation.md. Runs whose eval.json exists are skipped, so the study resumes.

    python benchmarks/kd_quality.py --out /tmp/kd_quality            # train + evaluate everything
    python benchmarks/kd_quality.py --out /tmp/kd_quality --report   # print the markdown table
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

METHODS = ("sft-expert", "sft-teacher", "kd-offline", "kd-online")
DEFAULT_METHODS = ("sft-expert", "sft-teacher", "kd-offline")
TIERS = ("none", "easy", "medium", "hard")


def _write_rows(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def prepare_expert(out: Path, n_train: int) -> None:
    from distillery.distill.trainer import chat_rows
    from distillery.world.expert import solve
    from distillery.world.tasks import generate_tasks

    if not (out / "expert.jsonl").exists():
        _write_rows(out / "expert.jsonl", chat_rows([solve(t) for t in generate_tasks("train", n_train, seed=11)]))


def _teacher_chunk(job: tuple[str, list]) -> tuple[list[dict], int]:
    """Runs the teacher over some tasks (one process); returns the successful ones as chat rows."""
    import torch

    torch.set_num_threads(1)
    from distillery.agent import Agent
    from distillery.distill.trainer import chat_rows
    from distillery.models import load_model
    from distillery.world import SYSTEM_PROMPT
    from distillery.world.tools import toolbox

    teacher, tasks = job
    agent = Agent(load_model(teacher), toolbox("train"), system=SYSTEM_PROMPT, max_steps=8)
    rows, solved = [], 0
    for task in tasks:
        trajectory = agent.run(task)
        if trajectory.outcome and trajectory.outcome.success:
            solved += 1
            rows.extend(chat_rows([trajectory]))
    return rows, solved


def prepare_teacher(out: Path, n_train: int, teacher: str, workers: int = 1) -> None:
    """The teacher's greedy trajectories on the same train tasks; the successful ones are kept."""
    import multiprocessing

    from distillery.world.tasks import generate_tasks

    if (out / "teacher.jsonl").exists():
        return
    tasks = generate_tasks("train", n_train, seed=11)
    started = time.perf_counter()
    chunk = -(-len(tasks) // max(workers, 1))
    jobs = [(teacher, tasks[i : i + chunk]) for i in range(0, len(tasks), chunk)]
    if len(jobs) == 1:
        parts = [_teacher_chunk(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
            parts = pool.map(_teacher_chunk, jobs)
    rows = [row for part, _ in parts for row in part]
    solved = sum(n for _, n in parts)
    _write_rows(out / "teacher.jsonl", rows)
    meta = {"n_train_tasks": n_train, "teacher": teacher, "teacher_solved": solved,
            "seconds": round(time.perf_counter() - started, 1), "workers": len(jobs)}
    (out / "data.json").write_text(json.dumps(meta, indent=2))
    print(meta, flush=True)


def teacher_forced(model_dir: Path, n_test: int, split: str = "test") -> dict:
    """Per-token NLL and whole-turn argmax accuracy on the expert's held-out trajectories, by tier.

    The tasks are `generate_tasks(split, n_test, seed=0)`: the test split unless told otherwise.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillery.chat_tokens import tokenize_rows, trained_spans
    from distillery.distill.trainer import chat_rows
    from distillery.world.expert import solve
    from distillery.world.tasks import generate_tasks

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    by_tier: dict[str, dict[str, float]] = {}
    for task in generate_tasks(split, n_test, seed=0):
        tier = by_tier.setdefault(task.metadata["tier"],
                                  {"tokens": 0, "nll": 0.0, "turns": 0, "turns_exact": 0, "hits": 0})
        # The sequences training builds (`chat_tokens.tokenize_rows`): each assistant span is one turn.
        for sequence in tokenize_rows(tokenizer, chat_rows([solve(task)])):
            ids = torch.tensor([sequence["input_ids"]])
            kept = torch.tensor([label != -100 for label in sequence["labels"]])[1:]
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, :-1]
            targets = ids[0, 1:]
            hits = logits.argmax(-1) == targets
            spans = trained_spans(kept.int().tolist())
            tier["nll"] += torch.nn.functional.cross_entropy(logits[kept], targets[kept], reduction="sum").item()
            tier["tokens"] += int(kept.sum())
            tier["hits"] += int((hits & kept).sum())
            tier["turns"] += len(spans)
            tier["turns_exact"] += sum(bool(hits[a:b].all()) for a, b in spans)
    return {
        tier: {
            "nll_per_token": v["nll"] / max(v["tokens"], 1),
            "token_accuracy": v["hits"] / max(v["tokens"], 1),
            "turn_exact": v["turns_exact"] / max(v["turns"], 1),
        }
        for tier, v in by_tier.items()
    }


def run_one(out: Path, method: str, seed: int, args: argparse.Namespace) -> None:
    from distillery.distill.config import DistillationConfig
    from distillery.distill.trainer import train_student
    from distillery.models.hf import HFModel
    from distillery.world.evaluate import evaluate_model
    from distillery.world.tasks import generate_tasks

    run_dir = out / "runs" / f"{method}-seed{seed}"
    if (run_dir / "eval.json").exists():
        return
    data = out / ("teacher.jsonl" if method == "sft-teacher" else "expert.jsonl")
    kd = method.startswith("kd")
    started = time.perf_counter()
    config = DistillationConfig(
        signal={"kd-offline": "sparse", "kd-online": "online"}.get(method, "sequence"),
        topk=20,
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
        threads=1,
        training_arguments={"warmup_steps": 20, "lr_scheduler_type": "cosine"},
    )
    train_student(args.student, data, out=run_dir, teacher=args.teacher if kd else None, config=config)
    train_seconds = time.perf_counter() - started
    report, _ = evaluate_model(HFModel(str(run_dir)), generate_tasks("test", args.n_test, seed=0))
    report["teacher_forced"] = teacher_forced(run_dir, args.n_test)
    report.update(method=method, seed=seed, train_seconds=round(train_seconds, 1), steps=args.steps,
                  alpha=args.alpha, temperature=args.temperature, divergence=args.divergence)
    (run_dir / "eval.json").write_text(json.dumps(report, indent=2))
    tiers = {t: round(v["success"], 3) for t, v in report["by_tier"].items()}
    forced = {t: round(v["turn_exact"], 3) for t, v in report["teacher_forced"].items()}
    print(f"{method} seed={seed} success={report['success']:.3f} {tiers} turn_exact={forced} "
          f"train={train_seconds:.0f}s", flush=True)


ABLATION = (  # (alpha, temperature, divergence), one seed, teacher-forced figures only
    (0.2, 2.0, "forward_kl"),
    (0.8, 2.0, "forward_kl"),
    (0.5, 1.0, "forward_kl"),
    (0.5, 4.0, "forward_kl"),
    (0.5, 2.0, "reverse_kl"),
)


def run_ablation(out: Path, args: argparse.Namespace) -> None:
    """kd-offline with other alpha / T / divergence on seed 0, scored teacher-forced only (cheap)."""
    from distillery.distill.config import DistillationConfig
    from distillery.distill.trainer import train_student

    for alpha, temperature, divergence in ABLATION:
        run_dir = out / "ablation" / f"a{alpha}-T{temperature}-{divergence}"
        if (run_dir / "eval.json").exists():
            continue
        started = time.perf_counter()
        config = DistillationConfig(
            signal="sparse", topk=20, alpha=alpha, temperature=temperature, divergence=divergence,
            max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, max_length=512, seed=0,
            logging_steps=25, progress=False, threads=1,
            training_arguments={"warmup_steps": 20, "lr_scheduler_type": "cosine"},
        )
        train_student(args.student, out / "expert.jsonl", out=run_dir, teacher=args.teacher, config=config)
        report = {"alpha": alpha, "temperature": temperature, "divergence": divergence, "seed": 0,
                  "train_seconds": round(time.perf_counter() - started, 1),
                  "teacher_forced": teacher_forced(run_dir, args.n_test)}
        (run_dir / "eval.json").write_text(json.dumps(report, indent=2))
        print(f"ablation {run_dir.name}: { {t: round(v['nll_per_token'], 3) for t, v in report['teacher_forced'].items()} }",
              flush=True)


def ablation_report(out: Path) -> str:
    rows = ["**kd-offline ablation, seed 0: NLL per assistant token (teacher-forced, lower is better)**", "",
            "| alpha | T | divergence | " + " | ".join(TIERS) + " |", "|---|---|---|" + "---|" * len(TIERS)]
    base = out / "runs" / "kd-offline-seed0" / "eval.json"
    entries = [(json.loads(p.read_text())) for p in sorted((out / "ablation").glob("*/eval.json"))]
    if base.exists():
        main = json.loads(base.read_text())
        entries.insert(0, {**main, "alpha": main["alpha"], "temperature": main["temperature"]})
    sft = out / "runs" / "sft-expert-seed0" / "eval.json"
    for e in entries:
        cells = [f"{e['teacher_forced'][t]['nll_per_token']:.3f}" if t in e["teacher_forced"] else "–" for t in TIERS]
        rows.append(f"| {e['alpha']} | {e['temperature']} | {e['divergence']} | " + " | ".join(cells) + " |")
    if sft.exists():
        e = json.loads(sft.read_text())
        cells = [f"{e['teacher_forced'][t]['nll_per_token']:.3f}" if t in e["teacher_forced"] else "–" for t in TIERS]
        rows.append("| 1.0 (sft-expert) | – | – | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def evaluate_teacher(out: Path, args: argparse.Namespace) -> None:
    from distillery.models import load_model
    from distillery.world.evaluate import evaluate_model
    from distillery.world.tasks import generate_tasks

    path = out / "teacher_eval.json"
    if not path.exists():
        report, _ = evaluate_model(load_model(args.teacher), generate_tasks("test", args.n_test, seed=0))
        teacher_dir = getattr(load_model(args.teacher), "name_or_path", None)
        if teacher_dir and Path(teacher_dir).is_dir():
            report["teacher_forced"] = teacher_forced(Path(teacher_dir), args.n_test)
        path.write_text(json.dumps(report, indent=2))


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {spread:.2f}"


def report(out: Path) -> str:
    """Markdown tables: free-running success, teacher-forced turn accuracy and NLL, by tier."""
    evals = {m: [json.loads(p.read_text()) for p in sorted((out / "runs").glob(f"{m}-seed*/eval.json"))]
             for m in METHODS}
    teacher = json.loads((out / "teacher_eval.json").read_text()) if (out / "teacher_eval.json").exists() else None
    tables = []
    for title, get in (
        ("success (free-running agent, checker)", lambda e, t: e["by_tier"].get(t, {}).get("success")),
        ("assistant tokens predicted right (teacher-forced argmax)",
         lambda e, t: e.get("teacher_forced", {}).get(t, {}).get("token_accuracy")),
        ("assistant turns exactly right (teacher-forced)",
         lambda e, t: e.get("teacher_forced", {}).get(t, {}).get("turn_exact")),
        ("NLL per assistant token (teacher-forced, lower is better)",
         lambda e, t: e.get("teacher_forced", {}).get(t, {}).get("nll_per_token")),
    ):
        rows = [f"**{title}**, mean ± std over seeds", "",
                "| method | " + " | ".join(TIERS) + " | seeds |", "|" + "---|" * (len(TIERS) + 2)]
        for method, runs in evals.items():
            if runs:
                cells = [_cell([v for e in runs if (v := get(e, t)) is not None]) for t in TIERS]
                rows.append(f"| {method} | " + " | ".join(cells) + f" | {len(runs)} |")
        if teacher is not None:
            cells = [f"{v:.2f}" if (v := get(teacher, t)) is not None else "–" for t in TIERS]
            rows.append("| teacher (reference) | " + " | ".join(cells) + " | – |")
        tables.append("\n".join(rows))
    return "\n\n".join(tables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/kd_quality"))
    parser.add_argument("--student", default="world:student-xs")
    parser.add_argument("--teacher", default="world:teacher")
    parser.add_argument("--n-train", type=int, default=600, help="train-split tasks offered to the teacher")
    parser.add_argument("--n-test", type=int, default=60, help="held-out test tasks per evaluation")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--divergence", default="forward_kl")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    parser.add_argument("--report", action="store_true", help="only print the table from finished runs")
    parser.add_argument("--rescore", action="store_true", help="recompute teacher-forced figures, then report")
    parser.add_argument("--ablation", action="store_true", help="kd-offline with other alpha/T/divergence (seed 0)")
    parser.add_argument("--expert-only", action="store_true", help="only the sft-expert arm (needs no teacher)")
    parser.add_argument("--workers", type=int, default=1, help="processes that collect the teacher's trajectories")
    parser.add_argument("--parallel", action="store_true",
                        help="train and score every (method, seed) run in its own process at once (a GPU or many cores)")
    args = parser.parse_args()
    if args.rescore:  # recompute the teacher-forced figures of finished runs (e.g. after adding one)
        for path in sorted((args.out / "runs").glob("*/eval.json")):
            evaluation = json.loads(path.read_text())
            evaluation["teacher_forced"] = teacher_forced(path.parent, args.n_test)
            path.write_text(json.dumps(evaluation, indent=2))
    if args.ablation:
        run_ablation(args.out, args)
    if args.report or args.rescore or args.ablation:
        print(report(args.out))
        if (args.out / "ablation").is_dir():
            print("\n" + ablation_report(args.out))
        return
    prepare_expert(args.out, args.n_train)
    if args.expert_only:  # the arm that needs no teacher, while the teacher is still training
        for seed in args.seeds:
            run_one(args.out, "sft-expert", seed, args)
        return
    if "sft-teacher" in args.methods:
        prepare_teacher(args.out, args.n_train, args.teacher, args.workers)
    evaluate_teacher(args.out, args)
    jobs = [(args.out, method, seed, args) for seed in args.seeds for method in args.methods]
    if args.parallel and len(jobs) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
            pool.starmap(run_one, jobs)
    else:
        for job in jobs:
            run_one(*job)
    print(report(args.out))


if __name__ == "__main__":
    main()
