"""The KD study (issue 14, item 2), offline world: four ways to train the smallest student, at equal budgets.

The smallest tier is the demo's student (`--student pruned`, the default): world:teacher cut to
`--student-layers` layers by `distillery student init`, made once per study and shared by every
run (a run's seed fixes its data order). `--student world:student-xs` trains from random weights
instead. It learns from world:teacher's own successful greedy trajectories on `--n-train`
train-split tasks (`kd_quality.prepare_teacher`), four ways:

    sft        SFT on the teacher's text (signal "sequence")
    kd-topk    offline sparse KD: the teacher's top-k logprobs on that text, computed once per run
    kd-online  dense KD: the teacher's full distribution, computed for every batch
    on-policy  from the `sft` run of the same seed (its checkpoint at `--warm-fraction` of the
               budget), the student writes its own episodes and the teacher scores them

Budgets (one or both; training stops at whichever binds first, `distillery.distill.budget`):
- `--budget-flops F`, equal ledger compute: a `ComputeBudget` callback reads the run's live compute
  ledger (`distill/ledger.py`, the figures `distillation.json` records) after every optimizer step
  and stops at the first step whose total reaches F, so runs overshoot by less than one step. The
  ledger counts the student's training passes, the teacher's forward passes made in the run
  (kd-online: every batch; kd-topk: one pass over the training data for its top-k sidecar) and,
  on-policy, the student's generation. The teacher's trajectories (the shared training text) are
  data, not charged to any method.
- `--budget-seconds S`, equal wall-clock: the same callback stops at S seconds counted from the call
  that trains (model loading and the top-k pass included; evaluation excluded).
- On-policy is charged for its warm start: the sft checkpoint's FLOPs and seconds (its
  `milestones/f<w>/ledger.json`) count toward its budget, so sft-then-on-policy uses the same total
  as every other method.
- The stop leaves the step count unknown, so the learning rate follows the budget instead
  (`--lr-schedule budget-linear`, the default): after `--warmup-steps` it falls linearly to 0 as
  the budget is used, and on-policy continues from where its warm start left off. `constant` keeps it.

Hyperparameters are chosen on the validation split only (`--select`): a grid per method
(`--grid-lr` x `--grid-alpha` for KD, `--grid-lr` for sft, `--grid-onpolicy-lr` for on-policy) on
`--select-seeds`, scored by validation success, then teacher-forced NLL; the choice is written to
`selection.json`. `selection_score` refuses any split but validation. The final runs (`--seeds`,
five by default) read `selection.json` and are scored on the test split: success by tier, NLL,
AUROC/ECE of the student's confidence, and the two-tier cascade it yields with the teacher (its
threshold calibrated on `--n-val` validation tasks for `--target`, then simulated on the test
tasks from cached runs; APGR). Checkpoints at `--curve` fractions of the budget are scored on
validation for the compute-to-quality table. Runs whose eval.json exists are skipped, so the
study resumes. `--report` prints the tables (kd_study_report.py), labelled "offline world" with
the world version, commit and teacher hash.

    python benchmarks/kd_study.py --out /tmp/kd_study --budget-flops 5e12 --select   # choose on validation
    python benchmarks/kd_study.py --out /tmp/kd_study --budget-flops 5e12            # 5 seeds, scored on test
    python benchmarks/kd_study.py --out /tmp/kd_study --report
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from kd_quality import prepare_teacher
from kd_study_report import (alone_runs, cascade_figures, evaluate_run, from_record, report, teacher_runs,
                             world_identity, world_tools)

PRUNED = "pruned"
METHODS = ("sft", "kd-topk", "kd-online", "on-policy")
SIGNALS = {"sft": "sequence", "kd-topk": "sparse", "kd-online": "online"}
SELECTION_SPLIT = "validation"
FINAL_SPLIT = "test"
CURVE_SPLIT = "validation"  # the cascade's calibration and the compute-to-quality curve


def selection_score(model_dir: Path, split: str, n: int) -> dict[str, Any]:
    """Score a selection run: on the validation split, and nothing else (test is for the final figures)."""
    if split != SELECTION_SPLIT:
        raise ValueError(f"hyperparameters are chosen on the {SELECTION_SPLIT} split only, not on {split!r}")
    return evaluate_run(model_dir, split, n)


def grid(method: str, args: argparse.Namespace) -> list[dict[str, float]]:
    if method == "sft":
        return [{"learning_rate": lr} for lr in args.grid_lr]
    if method == "on-policy":
        return [{"learning_rate": lr} for lr in args.grid_onpolicy_lr]
    return [{"learning_rate": lr, "alpha": alpha} for lr in args.grid_lr for alpha in args.grid_alpha]


def setting_name(setting: dict[str, float]) -> str:
    short = {"learning_rate": "lr", "alpha": "a"}
    return "-".join(f"{short.get(k, k)}{v:g}" for k, v in sorted(setting.items()))


def ordered(methods) -> list[str]:
    """The methods to run, in an order where sft precedes on-policy (its warm start); on-policy brings sft."""
    wanted = set(methods) | ({"sft"} if "on-policy" in methods else set())
    return [m for m in METHODS if m in wanted]


def budget_description(args: argparse.Namespace) -> dict[str, float | str | None]:
    return {"flops": args.budget_flops, "seconds": args.budget_seconds, "lr_schedule": args.lr_schedule}


def warm_dir(sft_run: Path, fraction: float) -> Path:
    from distillery.distill.budget import milestone_name

    path = sft_run / "milestones" / milestone_name(fraction)
    if not (path / "ledger.json").is_file():
        raise SystemExit(f"on-policy warm start {path} is missing: the sft run did not reach {fraction:.2f} of its "
                         "budget (raise --max-steps, or train sft first)")
    return path


def train_run(out: Path, method: str, seed: int, setting: dict[str, float], run_dir: Path, args: argparse.Namespace,
              *, warm: Path | None = None, milestones=()) -> dict[str, Any]:
    """Train one run to the budget; returns its train record (FLOPs and seconds include the warm start)."""
    from distillery.distill.budget import ComputeBudget
    from distillery.distill.config import DistillationConfig, OnPolicyConfig
    from distillery.distill.on_policy import train_on_policy
    from distillery.distill.trainer import train_student

    started = time.perf_counter()
    spent = json.loads((warm / "ledger.json").read_text()) if warm is not None else {"total_flops": 0.0, "seconds": 0.0}
    budget = ComputeBudget(flops=args.budget_flops, seconds=args.budget_seconds, started=started,
                           spent_flops=spent["total_flops"] or 0.0, spent_seconds=spent["seconds"],
                           milestones=sorted(milestones), save_dir=run_dir / "milestones",
                           decay=args.lr_schedule == "budget-linear")
    common = dict(max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=setting["learning_rate"],
                  seed=seed, logging_steps=25, progress=False, threads=torch_threads(args), self_check=0,
                  training_arguments={"warmup_steps": args.warmup_steps, "lr_scheduler_type": "constant_with_warmup"})
    data = out / "teacher.jsonl"
    if method == "on-policy":
        config = OnPolicyConfig(max_completion_length=args.max_completion_length, **common)
        train_on_policy(f"hf:{warm}", out=run_dir, teacher=args.teacher, data=data, tools=world_tools("train"),
                        config=config, callbacks=[budget])
    else:
        config = DistillationConfig(signal=SIGNALS[method], topk=args.topk, alpha=setting.get("alpha", 1.0),
                                    temperature=args.temperature, max_length=512, **common)
        teacher = args.teacher if method != "sft" else None
        train_student(args.student, data, out=run_dir, teacher=teacher, config=config, callbacks=[budget])
    seconds = time.perf_counter() - started
    summary = json.loads((run_dir / "distillation.json").read_text())
    ledger = summary["compute"]
    return {"method": method, "seed": seed, "setting": setting, "stopped_by": budget.stopped_by,
            "global_step": summary["global_step"], "ledger": ledger,
            "total_flops": spent["total_flops"] + (ledger["total_flops"] or 0.0),
            "seconds": round(spent["seconds"] + seconds, 2),
            "warm_start": None if warm is None else {"dir": str(warm), **spent}, "milestones": budget.saved}


def _describe(result: dict[str, Any]) -> str:
    train = result["train"]
    return (f"{train['method']} seed={train['seed']} {setting_name(train['setting'])} {result['split']}: "
            f"success={result['success']:.3f} nll={result['nll_per_token']:.3f} "
            f"auroc={result['calibration']['auroc']} flops={train['total_flops']:.3g} seconds={train['seconds']} "
            f"steps={train['global_step']} stopped_by={train['stopped_by']}")


def select(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The grid per method on --select-seeds, scored on validation; writes and returns selection.json."""
    chosen: dict[str, dict[str, float]] = {}
    scores: dict[str, list[dict[str, Any]]] = {}
    for method in ordered(args.methods):
        scores[method] = []
        for setting in grid(method, args):
            results = []
            for seed in args.select_seeds:
                run_dir = out / "select" / method / f"{setting_name(setting)}-seed{seed}"
                path = run_dir / "eval.json"
                if not path.exists():
                    warm = None
                    if method == "on-policy":
                        sft = out / "select" / "sft" / f"{setting_name(chosen['sft'])}-seed{seed}"
                        warm = warm_dir(sft, args.warm_fraction)
                    milestones = (args.warm_fraction,) if method == "sft" else ()
                    train = train_run(out, method, seed, setting, run_dir, args, warm=warm, milestones=milestones)
                    result = {**selection_score(run_dir, SELECTION_SPLIT, args.n_val), "train": train}
                    path.write_text(json.dumps(result, indent=2))
                    print(_describe(result), flush=True)
                results.append(json.loads(path.read_text()))
            nll = [r["nll_per_token"] for r in results if r["nll_per_token"] is not None]
            scores[method].append({"setting": setting, "success": statistics.fmean(r["success"] for r in results),
                                   "nll_per_token": statistics.fmean(nll) if nll else float("inf")})
        best = max(scores[method], key=lambda s: (s["success"], -s["nll_per_token"]))
        chosen[method] = best["setting"]
    selection = {"split": SELECTION_SPLIT, "n": args.n_val, "seeds": args.select_seeds,
                 "budget": budget_description(args), "warm_fraction": args.warm_fraction, "chosen": chosen,
                 "scores": scores, "rule": "highest validation success, then lowest teacher-forced NLL"}
    (out / "selection.json").write_text(json.dumps(selection, indent=2))
    print(f"selection (validation): {json.dumps(chosen)}", flush=True)
    return selection


def read_selection(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    if not path.is_file():
        raise SystemExit(f"{path}: no selection; run with --select first (it chooses on the validation split)")
    selection = json.loads(path.read_text())
    if selection.get("split") != SELECTION_SPLIT:
        raise SystemExit(f"{path}: chosen on {selection.get('split')!r}; only a validation selection is accepted")
    if selection["budget"] != budget_description(args):
        raise SystemExit(f"{path}: chosen at budget {selection['budget']}, not {budget_description(args)}")
    missing = [m for m in ordered(args.methods) if m not in selection["chosen"]]
    if missing:
        raise SystemExit(f"{path}: no setting for {', '.join(missing)}; run --select with those methods")
    return selection


def curve_points(run_dir: Path, result: dict[str, Any], final_validation: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The saved checkpoints scored on validation (success, NLL), then the final model as fraction 1.

    Validation, not test: compute-to-quality asks when each method first reaches the SFT student's
    final validation success (issue 14), and the curve chooses nothing."""
    from distillery.distill.budget import milestone_name

    points = []
    for record in result["train"]["milestones"]:
        scored = evaluate_run(run_dir / "milestones" / milestone_name(record["fraction"]), CURVE_SPLIT, n)
        points.append({**record, "success": scored["success"], "nll_per_token": scored["nll_per_token"]})
    points.append({"fraction": 1.0, "total_flops": result["train"]["total_flops"], "seconds": result["train"]["seconds"],
                   "success": final_validation["success"], "nll_per_token": final_validation["nll_per_token"]})
    return points


def student_cascade(out: Path, run_dir: Path, test_result: dict[str, Any], args: argparse.Namespace) -> tuple[dict, dict]:
    """The student on the validation tasks (its calibration runs, scored as evaluate_run scores), and
    the two-tier cascade it yields with the teacher: calibrated on validation, figures on test."""
    validation = evaluate_run(run_dir, CURVE_SPLIT, args.n_val)
    figures = cascade_figures(
        [from_record(r) for r in validation["tier_runs"]], teacher_runs(out, args.teacher, CURVE_SPLIT, args.n_val),
        [from_record(r) for r in test_result["tier_runs"]], teacher_runs(out, args.teacher, FINAL_SPLIT, args.n_test),
        args.target)
    return validation, figures


def final_runs(out: Path, args: argparse.Namespace) -> None:
    selection = read_selection(args.selection or out / "selection.json", args)
    for seed in args.seeds:
        for method in ordered(args.methods):
            run_dir = out / "runs" / f"{method}-seed{seed}"
            path = run_dir / "eval.json"
            if path.exists():
                continue
            curve = [f for f in args.curve if f < 1]
            warm = None
            if method == "sft":
                curve = sorted({*curve, args.warm_fraction})
            elif method == "on-policy":
                warm = warm_dir(out / "runs" / f"sft-seed{seed}", args.warm_fraction)
                curve = [f for f in curve if f > args.warm_fraction]
            setting = selection["chosen"][method]
            train = train_run(out, method, seed, setting, run_dir, args, warm=warm, milestones=curve)
            result = {**evaluate_run(run_dir, FINAL_SPLIT, args.n_test, teacher=args.teacher), "train": train}
            validation, result["cascade"] = student_cascade(out, run_dir, result, args)
            result["validation"] = {k: validation[k] for k in ("success", "by_tier", "nll_per_token", "calibration")}
            result["curve"] = curve_points(run_dir, result, validation, args.n_val)
            path.write_text(json.dumps(result, indent=2))
            print(_describe(result), flush=True)


def torch_threads(args: argparse.Namespace) -> int:
    return args.threads or os.cpu_count() or 1


def pruned_student(out: Path, args: argparse.Namespace) -> str:
    """The demo's student: the teacher cut to --student-layers layers (`distillery student init`),
    with the teacher's trajectories as calibration data; made once per study, shared by every run
    (a run's seed then fixes its data order and dropout)."""
    from distillery.distill.init import init_student
    from distillery.world.demo.stages import N_PRUNE_CALIBRATION

    path = out / "student-init"
    if not (path / "init.json").is_file():
        init_student(args.teacher, out / "teacher.jsonl", out=path, layers=args.student_layers,
                     n_calibration=N_PRUNE_CALIBRATION, seed=0, threads=torch_threads(args))
    return f"hf:{path}"


def backfill_step_scores(out: Path, args: argparse.Namespace) -> None:
    """Step-level AUROC/ECE for final runs scored before evaluate_run computed it: the saved student
    runs the test tasks again (greedy, so the same episodes up to batching numerics)."""
    from kd_study_report import step_quality

    for path in sorted((out / "runs").glob("*-seed*/eval.json")):
        result = json.loads(path.read_text())
        if result.get("step_calibration"):
            continue
        _, trajectories, _ = alone_runs(path.parent, FINAL_SPLIT, args.n_test)
        result["step_calibration"] = step_quality(trajectories, FINAL_SPLIT, args.teacher)
        path.write_text(json.dumps(result, indent=2))
        print(f"{path.parent.name}: step {result['step_calibration']}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/kd_study"))
    parser.add_argument("--student", default=PRUNED,
                        help=f"{PRUNED!r} (the demo's student: the teacher cut to --student-layers layers, "
                             "distillery student init) or a model URI trained from its own weights (world:student-xs)")
    parser.add_argument("--student-layers", type=int, default=3, help=f"layers kept by --student {PRUNED}")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run; 0 = one per CPU core")
    parser.add_argument("--target", type=float, default=0.97,
                        help="each student's cascade: cheapest threshold reaching target x teacher success on validation")
    parser.add_argument("--teacher", default="world:teacher")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--budget-flops", type=float, help="equal ledger compute: stop each run at F FLOPs")
    parser.add_argument("--budget-seconds", type=float, help="equal wall-clock: stop each run at S seconds")
    parser.add_argument("--n-train", type=int, default=600, help="train-split tasks the teacher writes trajectories for")
    parser.add_argument("--n-val", type=int, default=60, help="validation tasks scoring each selection run")
    parser.add_argument("--n-test", type=int, default=60, help="test tasks scoring each final run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--lr-schedule", choices=("budget-linear", "constant"), default="budget-linear",
                        help="after --warmup-steps: budget-linear falls to 0 as the budget is used (on-policy "
                             "continues its warm start's schedule); constant keeps the rate")
    parser.add_argument("--max-steps", type=int, default=100_000, help="a safety cap; the budget should stop first")
    parser.add_argument("--topk", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--max-completion-length", type=int, default=256, help="on-policy tokens per episode")
    parser.add_argument("--warm-fraction", type=float, default=0.5,
                        help="on-policy starts from the sft checkpoint at this fraction of the budget")
    parser.add_argument("--curve", type=float, nargs="*", default=[0.25, 0.5, 0.75],
                        help="budget fractions at which final runs save a checkpoint scored on validation")
    parser.add_argument("--select", action="store_true", help="run the grid and choose on the validation split")
    parser.add_argument("--select-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--grid-lr", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--grid-alpha", type=float, nargs="+", default=[0.2, 0.5])
    parser.add_argument("--grid-onpolicy-lr", type=float, nargs="+", default=[1e-4, 3e-4])
    parser.add_argument("--selection", type=Path, help="selection JSON (default: OUT/selection.json)")
    parser.add_argument("--workers", type=int, default=1, help="processes collecting the teacher's trajectories")
    parser.add_argument("--report", action="store_true", help="only print the tables from finished runs")
    parser.add_argument("--step-scores", action="store_true",
                        help="only add step-level AUROC/ECE to finished final runs that lack it")
    args = parser.parse_args(argv)
    if not (args.report or args.step_scores) and args.budget_flops is None and args.budget_seconds is None:
        parser.error("give --budget-flops, --budget-seconds or both (the study compares methods at equal budgets)")
    if not 0 < args.warm_fraction < 1:
        parser.error("--warm-fraction must be strictly between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = args.out
    if args.report:
        print(report(out, METHODS))
        return
    if args.step_scores:
        backfill_step_scores(out, args)
        return
    out.mkdir(parents=True, exist_ok=True)
    study = {"world": world_identity(), "budget": budget_description(args), "student": args.student,
             "student_layers": args.student_layers if args.student == PRUNED else None, "teacher": args.teacher,
             "n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test, "target": args.target,
             "threads": torch_threads(args)}
    (out / "study.json").write_text(json.dumps(study, indent=2))
    print(f"offline world: {study['world']}", flush=True)
    prepare_teacher(out, args.n_train, args.teacher, args.workers)
    if not (out / "teacher.jsonl").read_text().strip():
        raise SystemExit(f"{args.teacher} solved none of the {args.n_train} train tasks: no teacher text to learn from")
    if args.student == PRUNED:
        args.student = pruned_student(out, args)
    if args.select:
        select(out, args)
        return
    final_runs(out, args)
    print(report(out, METHODS))


if __name__ == "__main__":
    main()
