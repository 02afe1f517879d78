"""`distillery demo`: the whole pipeline in quick mode, its caching, its errors, and the batching adapter."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys

import pytest

from distillery.world.demo import DemoSettings, Stages, demo_queries, demo_tasks, fingerprint, read_trajectories, run_demo
from distillery.models.batching import BatchingModel
from distillery.errors import ConfigError
from distillery.models.hf import HFModel
from distillery.trajectory import Message, ToolCall
from distillery.world.models import TEACHER_DIR
from distillery.world.tasks import FAMILIES, split_of
from tests.tiny_models import tiny_llama, tiny_tokenizer

# The quick demo runs on the bundled world teacher; DISTILLERY_DEMO_TEACHER=hf:DIR runs it on a
# candidate checkpoint instead (what a world-teacher change should be checked with).
TEACHER = os.environ.get("DISTILLERY_DEMO_TEACHER", "world:teacher")
HAS_TEACHER = TEACHER != "world:teacher" or (TEACHER_DIR / "model.safetensors").is_file()
needs_teacher = pytest.mark.skipif(not HAS_TEACHER, reason="the bundled world teacher is not in the tree yet")


# -- the queries (queries.json) --------------------------------------------------------------------


def test_queries_are_checked_world_tasks_from_the_train_split():
    tasks = demo_tasks()
    assert len(tasks) >= 6 and [task.query for task in tasks] == [query for _, _, query in demo_queries()]
    assert len({task.id for task in tasks}) == len(tasks)
    tiers = {task.metadata["tier"] for task in tasks}
    assert {"none", "easy", "medium", "hard"} <= tiers  # the printed list shows every kind of task
    for task in tasks:
        family = FAMILIES[task.metadata["family"]]
        # Trained on in the seed's flow, so they must never be test-split combinations.
        assert split_of(family.key(task.metadata["entities"])) == "train"
        assert task.checker is not None and task.check(None).success is False


# -- stage markers -----------------------------------------------------------------------------------


def test_a_stage_is_cached_only_for_the_same_inputs(tmp_path):
    stages = Stages(tmp_path)
    key = fingerprint({"n_train": 10, "upstream": "abc"})
    assert stages.cached("collect", key) is None
    stages.finish("collect", key, {"ok": 3}, 1.5)
    assert stages.cached("collect", key)["summary"] == {"ok": 3}
    assert stages.cached("collect", fingerprint({"n_train": 11, "upstream": "abc"})) is None
    (tmp_path / "stages" / "collect.json").write_text("{not json")
    assert stages.cached("collect", key) is None  # a damaged marker means "run again", not a crash


def test_fresh_refuses_to_delete_a_directory_the_demo_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a demo output directory"):
        run_demo(DemoSettings(out=tmp_path), fresh=True)
    assert (tmp_path / "precious.txt").exists()


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="--n-train"):
        DemoSettings(n_train=0)
    with pytest.raises(ConfigError, match="--target"):
        DemoSettings(target=1.5)
    assert DemoSettings(teacher="anthropic:claude-opus-4-6").signal == "sequence"  # black box: no logits
    assert DemoSettings().signal == "sparse"


def test_the_student_is_pruned_from_a_local_teacher_unless_another_is_named():
    assert DemoSettings().student == "pruned" and DemoSettings().trained_student_uri == "world:student-pruned-kd"
    scratch = DemoSettings(student="world:student-xs")
    assert scratch.trained_student_uri == "world:student-xs-kd"
    assert DemoSettings(teacher="anthropic:claude-opus-4-6").student == "world:student-xs"
    with pytest.raises(ConfigError, match="--student pruned needs a teacher with local weights"):
        DemoSettings(teacher="anthropic:claude-opus-4-6", student="pruned")
    with pytest.raises(ConfigError, match="--student-layers"):
        DemoSettings(student_layers=0)


def test_changing_the_student_size_reruns_init_and_after_but_not_collection():
    from distillery.world.demo.stages import STAGES, stage_inputs

    small, smaller = DemoSettings(student_layers=2), DemoSettings(student_layers=1)
    changed = [name for name, _, _ in STAGES if stage_inputs(name, small) != stage_inputs(name, smaller)]
    assert changed == ["init"]  # the stages after it change through the chained upstream hash
    assert [name for name, _, _ in STAGES][:4] == ["collect", "build", "init", "train"]


def test_each_split_gets_a_toolbox_sealed_to_its_own_rows(tmp_path):
    from rich.console import Console

    from distillery.world.demo.context import SPLITS, DemoContext
    from distillery.world.tasks import generate_tasks

    ctx = DemoContext(DemoSettings(out=tmp_path), Console(file=io.StringIO()))
    products = {split: next(t.metadata["entities"]["product"] for t in generate_tasks(split, 200, seed=0)
                            if t.metadata["family"] == "price") for split in SPLITS}
    for split in SPLITS:
        tools = ctx.tools(split)
        for other, product in products.items():
            result = tools.run(ToolCall(name="get_product", arguments={"product": product}), inline=True)
            assert result.is_error == (other != split), (split, other, product, result.content)


def test_the_init_stage_prunes_the_teacher_and_training_starts_from_it(tmp_path, monkeypatch):
    import distillery.distill.trainer as trainer
    from rich.console import Console

    from distillery.world.demo import stages
    from distillery.world.demo.context import DemoContext
    from tests.tiny_models import save_tiny_model
    from tests.trainer_helpers import chat_records

    tokenizer = tiny_tokenizer()
    teacher = save_tiny_model(tmp_path / "teacher", model=tiny_llama(tokenizer, layers=4, hidden=32), tokenizer=tokenizer)
    settings = DemoSettings(out=tmp_path / "out", teacher=f"hf:{teacher}", student_layers=2, student_hidden=16,
                            train_steps=3)
    ctx = DemoContext(settings, Console(file=io.StringIO()))
    ctx.data_path.parent.mkdir(parents=True)
    ctx.data_path.write_text("".join(json.dumps(row) + "\n" for row in chat_records(6)))

    summary = stages.init(ctx)
    assert summary["pruned"] and summary["shape"]["layers"] == 2 and summary["shape"]["hidden"] == 16
    assert len(summary["layers_kept"]) == 2 and set(summary["layers_kept"]) <= {0, 1, 2, 3}
    assert summary["parameters"]["student"] < summary["parameters"]["source"]
    pruned = HFModel(str(ctx.init_dir), max_new_tokens=4)  # loads and generates like any hf: model
    assert pruned.model.config.num_hidden_layers == 2 and (ctx.init_dir / "init.json").is_file()
    assert pruned.generate([Message(role="user", content="hi")])[0] is not None

    calls = []

    def fake_train(student, data, *, out, config, **options):  # records what the stage asks the trainer for
        calls.append((student, config))
        out.mkdir(parents=True)
        (out / "distillation.json").write_text(json.dumps({
            "signal": config.signal, "alpha": config.alpha, "temperature": config.temperature,
            "global_step": config.max_steps, "examples": 6, "learning_rate": 1e-3, "log_history": []}))
        return out

    monkeypatch.setattr(trainer, "train_student", fake_train)
    stages.train(ctx)
    student, config = calls[0]
    assert student == f"hf:{ctx.init_dir}"  # the trainer sees init.json there: its recovery learning rate applies
    assert config.learning_rate is None and config.max_steps == 3


def test_a_hosted_teachers_budget_caps_the_whole_collection_not_each_split(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from rich.console import Console

    import distillery.collect
    from distillery.world.demo import stages
    from distillery.world.demo.context import DemoContext

    budgets = []

    class Collector:  # spends $2 per split and records the cap it was given
        def __init__(self, model, tools, *, budget_usd=None, **options):
            budgets.append(budget_usd)

        def collect(self, tasks):
            spent = min(2.0, budgets[-1])
            return SimpleNamespace(ok=len(tasks), failed=0, incomplete=0, resumed=0, succeeded=0, checked=0,
                                   cost_usd=spent, wall_s=0.1, first_error=None, stopped_by_budget=spent < 2.0)

    monkeypatch.setattr(distillery.collect, "TeacherCollector", Collector)
    ctx = DemoContext(DemoSettings(out=tmp_path, teacher="anthropic:claude-opus-4-6", budget_usd=5.0, n_train=2,
                                   n_validation=2, n_test=2), Console(file=io.StringIO()))
    ctx._teacher = object()  # never called by the stand-in collector
    summary = stages.collect(ctx)
    assert budgets == [5.0, 3.0, 1.0]  # each split gets what the earlier ones left
    assert summary["cost_usd"] == 5.0 and summary["stopped_by_budget"]


def test_the_summary_shows_each_tier_and_the_random_router_at_the_same_share():
    from rich.console import Console

    from distillery.world.demo.console import print_summary

    rows = [
        {"name": "student alone", "success": 0.6, "answered_by_student": 1.0, "cost_per_1k_usd": 1.0,
         "saving_vs_teacher": 0.99},
        {"name": "teacher alone", "success": 1.0, "answered_by_student": 0.0, "cost_per_1k_usd": 100.0,
         "saving_vs_teacher": 0.0},
        {"name": "cascade", "success": 0.98, "answered_by_student": 0.7, "cost_per_1k_usd": 31.0,
         "saving_vs_teacher": 0.69},
        {"name": "random router", "success": 0.72, "answered_by_student": 0.7, "cost_per_1k_usd": 30.7,
         "saving_vs_teacher": 0.693},
    ]
    console = Console(file=io.StringIO(), width=80)  # a plain terminal: every figure must still show in full
    print_summary(console, DemoSettings(), {"n_tasks": 100, "rows": rows})
    printed = " ".join(console.file.getvalue().split())  # sentences wrap at the terminal's width
    for text in ("by student", "by teacher", "random router", "70.0%", "30.0%", "31.0%"):
        assert text in printed, text
    assert "keeps 98.0% of the teacher's success at 31.0% of its cost" in printed
    assert "same 30.0% to the teacher would keep 72.0%" in printed


# -- the hosted teacher without a key ----------------------------------------------------------------


def test_a_claude_teacher_without_a_key_stops_with_one_line_naming_the_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "distillery.cli", "demo", "--teacher", "anthropic:claude-opus-4-6", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ANTHROPIC_API_KEY" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()  # nothing written before the check


# -- batching concurrent calls -----------------------------------------------------------------------


class CountingModel(HFModel):
    """A real (tiny) HFModel that records the size of every generate_many batch."""

    batches: list[int]

    def generate_many(self, conversations, tools=None, **options):
        self.batches.append(len(conversations))
        return super().generate_many(conversations, tools, **options)


def test_concurrent_calls_are_answered_by_one_batch_with_the_same_turns():
    tokenizer = tiny_tokenizer()
    model = CountingModel("tiny", model=tiny_llama(tokenizer, seed=0), tokenizer=tokenizer)
    model.batches = []
    conversations = [[Message(role="user", content=f"What is {i} + {i}?")] for i in range(6)]
    alone = [model.generate(c, None, max_tokens=12)[0] for c in conversations]
    model.batches.clear()
    wrapped = BatchingModel(model, max_batch=4)

    async def together():
        return await asyncio.gather(*(wrapped.agenerate(c, None, max_tokens=12) for c in conversations))

    results = asyncio.run(together())
    assert model.batches == [4, 2]  # six concurrent calls, at most four per batch
    assert [r[0].text for r in results] == [t.text for t in alone]
    assert [r[0].usage for r in results] == [t.usage for t in alone]
    # Calls with different options never share a batch; a second event loop starts clean.
    model.batches.clear()

    async def mixed():
        return await asyncio.gather(wrapped.agenerate(conversations[0], None, max_tokens=12),
                                    wrapped.agenerate(conversations[1], None, max_tokens=5))

    first, second = asyncio.run(mixed())
    assert sorted(model.batches) == [1, 1]
    assert first[0].text == alone[0].text and second[0].usage.output_tokens <= 5


# -- the whole demo, quick ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    results = run_demo(DemoSettings.quick_settings(out=out, teacher=TEACHER))
    return out, results


@needs_teacher
def test_quick_demo_writes_every_stage_artifact(quick_demo):
    out, results = quick_demo
    for path in ("store.db", "data/train.jsonl", "data/train.topk.parquet", "data/train.topk.json",
                 "student/config.json", "student/model.safetensors", "student/distillation.json", "cascade.toml",
                 "runs/student-validation.jsonl", "runs/student-test.jsonl", "runs/cascade-test.jsonl",
                 "runs/cascade-queries.jsonl", "results.json"):
        assert (out / path).is_file(), path
    for stage in ("collect", "build", "init", "train", "calibrate", "queries", "evaluate"):
        assert (out / "stages" / f"{stage}.json").is_file()
    saved = json.loads((out / "results.json").read_text())
    if TEACHER == "world:teacher":
        assert saved["world"] == "offline" and "stand-in" in saved["pricing"]
    assert saved["stages"] == json.loads(json.dumps(results["stages"], default=str))
    # The JSONL is OpenAI's format: every line has messages and tools, arguments as JSON strings.
    first = json.loads((out / "data/train.jsonl").read_text().splitlines()[0])
    assert {"messages", "tools"} <= set(first)


@needs_teacher
def test_quick_demo_numbers_are_in_range_and_come_from_its_runs(quick_demo):
    out, results = quick_demo
    stages = results["stages"]
    assert stages["collect"]["ok"] > 0 and stages["build"]["examples"] > 0
    assert 0 < stages["build"]["sidecar"]["coverage"] <= 1
    assert stages["train"]["signal"] == "sparse" and stages["train"]["steps"] == 100
    # cut from the teacher, to the default depth
    assert stages["init"]["pruned"] and len(stages["init"]["layers_kept"]) == DemoSettings().student_layers
    assert stages["init"]["parameters"]["student"] < stages["init"]["parameters"]["source"]
    assert stages["train"]["start"] == f"hf:{out / 'student-init'}"
    assert stages["train"]["threads"] == DemoSettings().torch_threads >= 1
    assert stages["calibrate"]["takeover_runs"] >= 0 and DemoSettings().escalate == "task"
    assert 0.0 <= stages["calibrate"]["threshold"] <= 1.0
    rows = {row["name"]: row for row in stages["evaluate"]["rows"]}
    assert set(rows) == {"student alone", "teacher alone", "cascade", "random router"}
    for row in rows.values():
        assert 0.0 <= row["success"] <= 1.0 and row["cost_per_1k_usd"] >= 0.0
    if TEACHER == "world:teacher":  # priced as claude-opus-4-6 (stand-in); an hf: candidate is unpriced
        assert rows["teacher alone"]["cost_per_1k_usd"] > rows["student alone"]["cost_per_1k_usd"]
        assert rows["teacher alone"]["saving_vs_teacher"] == pytest.approx(0.0)

    # Routing follows the calibrated threshold. (How many tasks stay with the student depends on
    # the models: a 100-step student is far below the bundled teacher, so it may keep none.)
    cascade = read_trajectories(out / "runs/cascade-test.jsonl")
    threshold = stages["calibrate"]["threshold"]
    escalated = [any(step.escalated for step in t.steps) for t in cascade]
    assert any(escalated)
    assert rows["cascade"]["task_escalation_rate"] == pytest.approx(sum(escalated) / len(cascade))
    # Under "task" (the default) an escalated task ends with the teacher's answer, and the random
    # router sends the same share.
    share = sum(escalated) / len(cascade)
    assert rows["cascade"]["answered_by_student"] == pytest.approx(1 - share)
    assert rows["random router"]["answered_by_student"] == pytest.approx(1 - share)
    assert rows["random router"]["success"] == pytest.approx(
        (1 - share) * rows["student alone"]["success"] + share * rows["teacher alone"]["success"])
    for trajectory, doubted in zip(cascade, escalated):
        student_confidences = [c.confidence for step in trajectory.steps for c in step.routing.confidences
                               if c.tier == 0]
        if doubted:  # the student's steps before the doubted one are kept; the teacher does the rest
            first = next(i for i, step in enumerate(trajectory.steps) if step.escalated)
            assert {step.producer for step in trajectory.steps[:first]} <= {"world:student-pruned-kd"}
            assert {step.producer for step in trajectory.steps[first:]} == {TEACHER}
        else:
            assert {step.producer for step in trajectory.steps} == {"world:student-pruned-kd"}
            assert min(student_confidences) >= threshold

    # Printed figures are recomputed from the saved runs, not read from a file of expected values.
    student = read_trajectories(out / "runs/student-test.jsonl")
    assert rows["student alone"]["success"] == sum(bool(t.outcome.success) for t in student) / len(student)
    assert rows["cascade"]["success"] == sum(bool(t.outcome.success) for t in cascade) / len(cascade)

    queries = stages["queries"]["rows"]
    assert [row["query"] for row in queries] == [task.query for task in demo_tasks()]
    for row in queries:
        assert row["answered_by"] in ("student", "escalated to teacher")
        assert isinstance(row["correct"], bool)


@needs_teacher
def test_a_rerun_reuses_every_finished_stage(quick_demo):
    out, first = quick_demo
    again = run_demo(DemoSettings.quick_settings(out=out, teacher=TEACHER))
    assert all(timing["cached"] for timing in again["timing"]["stages"].values())
    assert again["stages"] == json.loads(json.dumps(first["stages"], default=str))


# -- Claude as the teacher, against a local server speaking the Messages API -------------------------


def expert_as_claude(tasks):
    """A responder that answers like a perfect Claude: the world expert's next step, as Messages API blocks."""
    from tests.wire.anthropic_server import message, text_block, tool_use_block
    from distillery.world.expert import solve

    by_query = {task.query: task for task in tasks}

    def reply(request):
        turns = request.json["messages"]
        first = turns[0]["content"]
        query = first if isinstance(first, str) else "".join(b.get("text", "") for b in first if b.get("type") == "text")
        task = by_query.get(query)
        if task is None:  # the demo's reachability check ("Reply with OK.")
            return message([text_block("OK")], model=request.json["model"])
        gold = solve(task).steps
        step = gold[min(sum(1 for t in turns if t["role"] == "assistant"), len(gold) - 1)]
        if step.tool_calls:
            blocks = [text_block(step.text)] if step.text else []
            blocks += [tool_use_block(None, call.name, call.arguments) for call in step.tool_calls]
            return message(blocks, stop_reason="tool_use", model=request.json["model"], input_tokens=900, output_tokens=40)
        return message([text_block(step.text)], model=request.json["model"], input_tokens=900, output_tokens=30)

    return reply


def test_claude_as_the_teacher_switches_to_sequence_kd_and_prices_real_calls(tmp_path, monkeypatch):
    from distillery.world.demo import world_split
    from tests.wire.anthropic_server import ScriptedAnthropicServer

    settings = DemoSettings(out=tmp_path / "out", teacher="anthropic:claude-opus-4-6", n_train=12, n_validation=8,
                            n_test=8, train_steps=8, batch_size=4, concurrency=8)
    tasks = [*demo_tasks(), *(t for split in ("train", "validation", "test")
                             for t in world_split(split, getattr(settings, f"n_{split}"), settings.seed))]
    key = "sk-ant-demo-test-key-0123456789"
    with ScriptedAnthropicServer(responder=expert_as_claude(tasks)) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", key)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        results = run_demo(settings)
        models = {r.json["model"] for r in server.requests}
    assert models == {"claude-opus-4-6"}
    assert results["world"] == "hosted teacher" and results["signal"] == "sequence"
    stages = results["stages"]
    assert "sidecar" not in stages["build"] and not (tmp_path / "out/data/train.topk.parquet").exists()
    assert stages["train"]["signal"] == "sequence"
    rows = {row["name"]: row for row in stages["evaluate"]["rows"]}
    assert rows["teacher alone"]["success"] == 1.0  # the stand-in answers like the expert
    # Every split's tasks were solved through their own split's sealed toolbox (another split's would say "not found").
    assert stages["collect"]["correct"] == stages["collect"]["checked"] == len(tasks)
    assert stages["init"] == {"pruned": False, "student": "world:student-xs"}  # a black box has no weights to cut
    assert rows["teacher alone"]["cost_per_1k_usd"] > 0  # priced at claude-opus-4-6's list price
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".toml", ".db"):
            assert key.encode() not in path.read_bytes(), path


def test_a_task_that_failed_before_any_step_stayed_with_the_student():
    from distillery.world.demo.stages import answered_by_student
    from distillery.trajectory import Step, Trajectory

    def run(*tiers, status="ok"):
        return Trajectory(task_id="t", query="q", status=status,
                          steps=[Step(model="m", text="a", routing={"tier": tier}) for tier in tiers])

    runs = [run(0, 0), run(0, 1), run(1), run(status="error")]  # the last one: no step at all
    assert answered_by_student(runs) == pytest.approx(0.5)
    assert answered_by_student([]) == 0.0
