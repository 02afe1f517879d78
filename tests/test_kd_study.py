"""The KD study harness (benchmarks/kd_study.py) end to end at toy scale on the offline world.

One selection (validation) and one final run (test) of every method, a few steps each, a handful
of tasks; then the outputs' structure, the FLOPs budget stop, the interval math and the rule that
hyperparameters are chosen on validation only. No figure from here means anything.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import kd_study  # noqa: E402
import kd_study_report  # noqa: E402

BUDGET = 6e9  # a few steps of each method for world:student-xs on 4 tasks' trajectories
TOY = ["--student", "world:student-xs", "--budget-flops", str(BUDGET), "--n-train", "4", "--n-val", "2", "--n-test", "2", "--batch-size", "2",
       "--warmup-steps", "0", "--max-completion-length", "48", "--grid-lr", "3e-3", "--grid-alpha", "0.2", "0.5",
       "--grid-onpolicy-lr", "1e-4", "--curve", "0.5", "--threads", "1"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Runs --select, then the final runs (seed 0), recording which task splits each phase asked for."""
    import distillery.world.tasks as tasks

    out = tmp_path_factory.mktemp("kd_study")
    real = tasks.generate_tasks
    splits: dict[str, set[str]] = {"select": set(), "final": set()}
    phase = "select"

    def recording(split, *args, **kwargs):
        splits[phase].add(split)
        return real(split, *args, **kwargs)

    tasks.generate_tasks = recording
    try:
        kd_study.main(["--out", str(out), "--select", *TOY])
        phase = "final"
        kd_study.main(["--out", str(out), "--seeds", "0", *TOY])
    finally:
        tasks.generate_tasks = real
    return out, splits


def test_outputs(study, capsys):
    out, _ = study
    assert json.loads((out / "study.json").read_text())["world"]["label"] == "offline world"
    for method in kd_study.METHODS:
        result = json.loads((out / "runs" / f"{method}-seed0" / "eval.json").read_text())
        assert result["split"] == "test" and result["label"] == "offline world"
        assert set(result["by_tier"]) <= {"none", "easy", "medium", "hard"} and 0 <= result["success"] <= 1
        assert result["nll_per_token"] > 0 and set(result["calibration"]) >= {"auroc", "ece", "n"}
        train = result["train"]
        assert train["setting"] == json.loads((out / "selection.json").read_text())["chosen"][method]
        assert train["stopped_by"] == "flops" and train["total_flops"] >= BUDGET and train["seconds"] > 0
        assert result["curve"][-1]["fraction"] == 1.0
        assert result["curve"][-1]["success"] == result["validation"]["success"]
        assert len(result["tier_runs"]) == 2 and all("handovers" not in r for r in result["tier_runs"])
        cascade = result["cascade"]
        assert cascade["escalate"] == "restart" and cascade["target"] == 0.97 and 0 <= cascade["teacher_fraction"] <= 1
        assert cascade["student_success"] == result["success"]
        steps = result["step_calibration"]  # every step of the 2 test tasks labelled right or wrong
        assert steps["n"] >= 2 and 0 <= steps["steps_wrong"] <= steps["n"]
    on_policy = json.loads((out / "runs" / "on-policy-seed0" / "eval.json").read_text())["train"]
    assert on_policy["warm_start"]["total_flops"] >= BUDGET / 2  # its sft warm start is charged to it
    assert on_policy["total_flops"] == pytest.approx(on_policy["warm_start"]["total_flops"]
                                                     + on_policy["ledger"]["total_flops"])
    topk = json.loads((out / "runs" / "kd-topk-seed0" / "eval.json").read_text())["train"]["ledger"]
    assert topk["teacher_flops"] > 0  # the in-run top-k pass is on the ledger
    sft = out / "runs" / "sft-seed0" / "eval.json"
    scored = json.loads(sft.read_text())
    sft.write_text(json.dumps({**scored, "step_calibration": None}))  # a run scored before step labels existed
    kd_study.main(["--out", str(out), "--step-scores", "--student", "world:student-xs", "--n-test", "2"])
    assert json.loads(sft.read_text())["step_calibration"]["n"] == scored["step_calibration"]["n"]
    kd_study.main(["--out", str(out), "--report"])
    printed = capsys.readouterr().out
    assert "offline world (v2, commit" in printed and "Compute to quality" in printed and "Two-tier cascade" in printed
    assert "step AUROC" in printed
    assert all(f"| {m} | 1 |" in printed for m in kd_study.METHODS)


def test_selection_on_validation_only(study, tmp_path):
    out, splits = study
    assert splits["select"] <= {"train", "validation"} and "validation" in splits["select"]
    # Final runs are scored on test; validation only calibrates each student's cascade and scores the curve.
    assert {"validation", "test"} <= splits["final"] <= {"train", "validation", "test"}
    selection = json.loads((out / "selection.json").read_text())
    assert selection["split"] == "validation" and len(selection["scores"]["kd-topk"]) == 2
    with pytest.raises(ValueError, match="validation split only"):
        kd_study.selection_score(out / "runs" / "sft-seed0", "test", 2)
    forged = tmp_path / "selection.json"
    forged.write_text(json.dumps({**selection, "split": "test"}))
    with pytest.raises(SystemExit, match="only a validation selection"):
        kd_study.read_selection(forged, kd_study.parse_args(["--out", str(out), *TOY]))


def test_budgets_stop_at_the_step_that_reaches_them(tmp_path):
    from distillery.distill.budget import ComputeBudget
    from distillery.distill.config import DistillationConfig
    from distillery.distill.trainer import chat_rows, train_student
    from distillery.world.expert import solve
    from distillery.world.tasks import generate_tasks

    class Recording(ComputeBudget):
        def on_step_end(self, args, state, control, **kwargs):
            self.totals.append(self.spent()[0])
            return super().on_step_end(args, state, control, **kwargs)

    rows = chat_rows([solve(t) for t in generate_tasks("train", 4, seed=11)])
    budget = Recording(flops=3e9)
    budget.totals = []  # the ledger's total FLOPs after each step
    config = DistillationConfig(max_steps=50, batch_size=2, progress=False, self_check=0, threads=1)
    out = train_student("world:student-xs", rows, out=tmp_path / "sft", config=config, callbacks=[budget])
    ledger = json.loads((out / "distillation.json").read_text())
    assert budget.stopped_by == "flops" and ledger["global_step"] == len(budget.totals) < 50
    assert budget.totals[-2] < 3e9 <= budget.totals[-1] == ledger["compute"]["total_flops"]

    clock = ComputeBudget(seconds=5.0, started=time.perf_counter() - 10.0)  # counted from a start already 10 s ago
    out = train_student("world:student-xs", rows, out=tmp_path / "clock", config=config, callbacks=[clock])
    assert clock.stopped_by == "seconds" and json.loads((out / "distillation.json").read_text())["global_step"] == 1


def test_budget_decay_follows_the_fraction_of_the_budget_used(tmp_path):
    """decay=True: each step's learning rate is the scheduler's times the budget left before it."""
    from transformers import TrainerCallback

    from distillery.distill.budget import ComputeBudget
    from distillery.distill.config import DistillationConfig
    from distillery.distill.trainer import chat_rows, train_student
    from distillery.world.expert import solve
    from distillery.world.tasks import generate_tasks

    class Rates(TrainerCallback):  # the rate each optimizer step uses, and the budget used before it
        def __init__(self, budget):
            self.budget, self.seen = budget, []

        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            flops = self.budget.spent()[0] if state.global_step else self.budget.spent_flops
            self.seen.append((optimizer.param_groups[0]["lr"], flops / self.budget.flops))

    rows = chat_rows([solve(t) for t in generate_tasks("train", 4, seed=11)])
    config = DistillationConfig(max_steps=50, batch_size=2, progress=False, self_check=0, threads=1, learning_rate=1e-3,
                                logging_steps=1, training_arguments={"lr_scheduler_type": "constant"})
    for spent in (0.0, 1.5e9):  # a fresh run, and one charged half its budget up front (a warm start)
        budget = ComputeBudget(flops=3e9, spent_flops=spent, decay=True)
        rates = Rates(budget)
        train_student("world:student-xs", rows, out=tmp_path / f"run{spent:g}", config=config,
                      callbacks=[budget, rates])
        assert budget.stopped_by == "flops" and len(rates.seen) > 3
        for rate, used in rates.seen:
            assert rate == pytest.approx(1e-3 * (1 - used), rel=1e-6)
        assert rates.seen[0][0] == pytest.approx(1e-3 * (1 - spent / 3e9))
        assert [r for r, _ in rates.seen] == sorted((r for r, _ in rates.seen), reverse=True)
        logged = json.loads((tmp_path / f"run{spent:g}" / "distillation.json").read_text())["log_history"]
        logged_rates = [entry["learning_rate"] for entry in logged if "learning_rate" in entry]
        assert logged_rates and all(rate <= 1e-3 * (1 - spent / 3e9) + 1e-12 for rate in logged_rates)
        assert logged_rates[-1] == pytest.approx(rates.seen[-1][0])  # the rate the last logged step applied


def test_interval_math(monkeypatch):
    stats = kd_study_report.interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # t(0.975, 4) = 2.776445, s = sqrt(2.5): half-width 2.776445 * 1.581139 / sqrt(5)
    assert stats["kind"] == "t" and stats["mean"] == 3.0
    assert stats["half"] == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert kd_study_report.interval([0.4])["half"] is None and kd_study_report.interval([])["mean"] is None
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # no scipy: the documented normal approximation
    normal = kd_study_report.interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert normal["kind"] == "normal" and normal["half"] == pytest.approx(1.959964 * math.sqrt(0.5), rel=1e-6)


def test_compute_to_reach():
    means = {"sft": [(1e12, 0.5), (2e12, 0.7), (4e12, 0.8)],  # SFT's final success is 0.8, at 4e12
             "on-policy": [(3e12, 0.81), (4e12, 0.9)],         # reaches it at its first point
             "kd-topk": [(2e12, 0.79), (4e12, 0.79)]}          # never does
    reach = kd_study_report.compute_to_reach(means)
    assert reach["target"] == 0.8
    assert reach["methods"] == {"sft": (4e12, 1.0), "on-policy": (3e12, 0.75), "kd-topk": (None, None)}
    assert kd_study_report.compute_to_reach({"kd-topk": means["kd-topk"]}) is None
