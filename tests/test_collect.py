"""Teacher collection: concurrency, retries, failures, resume, budget, n samples, and the CLI.

The model is a small fake `ChatModel` defined here (scripted turns, optional delays and transient
errors); it implements the protocol, it does not mock any SDK.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distillery.collect import CollectResult, TeacherCollector, as_tasks, collect_teacher_trajectories
from distillery.errors import ConfigError, ModelError, TransientModelError
from distillery.models import _PROVIDERS, register_provider
from distillery.models.retrying import RetryingModel
from distillery.redaction import redact_secrets
from distillery.store import SQLiteStore, TrajectoryKey
from distillery.tasks import Task
from distillery.tools import tool
from distillery.trajectory import ToolCall, Turn, Usage


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First addend.
        b: Second addend.
    """
    return a + b


class FakeModel:
    """A scripted ChatModel: answers "answer to <query>", calls `add` for queries starting "add",
    fails as scripted, and records how many calls were in flight at once."""

    def __init__(self, uri="fake:teacher", *, delay=0.0, cost=0.0, failures=None, behaviour=None):
        self.uri = uri
        self.delay = delay
        self.cost = cost
        self.failures = dict(failures or {})  # query -> list of exceptions to raise, in order (then succeed)
        self.behaviour = behaviour or {}  # query -> "model_error" | "crash" | "transient_forever" | "max_steps"
        self.calls: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def agenerate(self, messages, tools=None, **options):
        query = next(m.content for m in messages if m.role == "user")
        self.calls.append({"query": query, "tools": tools, **options})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            pending = self.failures.get(query)
            if pending:
                raise pending.pop(0)
            kind = self.behaviour.get(query)
            if kind == "model_error":
                raise ModelError("400 bad request: nope")
            if kind == "crash":
                raise RuntimeError("provider bug")
            if kind == "transient_forever":
                raise TransientModelError("529 overloaded", status=529)
            usage = Usage(input_tokens=10, output_tokens=5)
            if kind == "max_steps" or (query.startswith("add") and messages[-1].role != "tool"):
                call = ToolCall(name="add", arguments={"a": 2, "b": 3})
                return [Turn(tool_calls=[call], stop_reason="tool_use", usage=usage, cost_usd=self.cost, model=self.uri)]
            answer = f"answer to {query}"
            if messages[-1].role == "tool":
                answer = f"the sum is {messages[-1].content}"
            return [Turn(text=answer, usage=usage, cost_usd=self.cost, model=self.uri)]
        finally:
            self.in_flight -= 1

    def generate(self, messages, tools=None, **options):
        return asyncio.run(self.agenerate(messages, tools, **options))


class RecordingSleep:
    """An injected sleep that records the delays asked for and returns at once."""

    def __init__(self):
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def queries(k: int) -> list[str]:
    return [f"question {i}" for i in range(k)]


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "store.db")
    yield s
    s.close()


def collector(model, **kwargs) -> TeacherCollector:
    kwargs.setdefault("progress", False)
    return TeacherCollector(model, [add], **kwargs)


# -- concurrency ---------------------------------------------------------------------------------


def test_concurrency_is_bounded_and_used():
    model = FakeModel(delay=0.02)
    result = collector(model, concurrency=4).collect(queries(20))
    assert result.ok == 20
    assert model.max_in_flight == 4


def test_concurrency_runs_requests_in_parallel():
    model = FakeModel(delay=0.05)
    start = time.perf_counter()
    collector(model, concurrency=10).collect(queries(20))
    elapsed = time.perf_counter() - start
    # Serial would take 1.0 s; two waves of 10 take about 0.1 s.
    assert elapsed < 0.6


# -- retries -------------------------------------------------------------------------------------


def test_retry_after_is_used_as_the_delay_and_capped():
    sleep = RecordingSleep()
    failures = {
        "question 0": [
            TransientModelError("429 slow down", status=429, retry_after=2.5),
            TransientModelError("429 slow down", status=429, retry_after=500.0),
        ]
    }
    model = FakeModel(failures=failures)
    result = collector(model, sleep=sleep, backoff_max_s=30.0).collect(queries(1))
    assert result.ok == 1 and result.failed == 0
    assert result.retries == 2
    assert sleep.delays == [2.5, 30.0]
    assert len(model.calls) == 3


def test_retry_after_really_waits():
    failures = {"question 0": [TransientModelError("503", status=503, retry_after=0.2)]}
    model = FakeModel(failures=failures)
    start = time.perf_counter()
    result = collector(model).collect(queries(1))
    assert result.ok == 1
    assert time.perf_counter() - start >= 0.2


def test_backoff_is_exponential_with_full_jitter():
    sleep = RecordingSleep()
    model = FakeModel(behaviour={"q": "transient_forever"})
    retrying = RetryingModel(model, max_retries=6, backoff_base_s=1.0, backoff_max_s=10.0, sleep=sleep, rng=random.Random(0))
    with pytest.raises(TransientModelError, match="gave up after 6 retries"):
        asyncio.run(retrying.agenerate([_user("q")]))
    caps = [1, 2, 4, 8, 10, 10]
    assert len(sleep.delays) == 6
    assert all(0 <= d <= cap for d, cap in zip(sleep.delays, caps))
    # Full jitter: not simply the cap every time.
    assert any(d < cap * 0.9 for d, cap in zip(sleep.delays, caps))
    assert retrying.uri == "fake:teacher"


def test_giving_up_stores_a_failed_row_and_the_batch_goes_on(store):
    sleep = RecordingSleep()
    model = FakeModel(behaviour={"question 1": "transient_forever"})
    result = collector(model, store=store, max_retries=3, sleep=sleep).collect(queries(3))
    assert (result.ok, result.failed) == (2, 1)
    assert len([c for c in model.calls if c["query"] == "question 1"]) == 4  # 1 try + 3 retries
    failed = store.query(status="error")
    assert len(failed) == 1
    assert failed[0].query == "question 1"
    assert "529 overloaded" in failed[0].error and "gave up after 3 retries" in failed[0].error
    assert result.first_error == failed[0].error


def test_non_transient_errors_and_exceptions_fail_only_their_task(store):
    model = FakeModel(behaviour={"question 0": "model_error", "question 2": "crash"})
    result = collector(model, store=store, concurrency=2).collect(queries(5))
    assert (result.ok, result.failed) == (3, 2)
    errors = {t.query: t.error for t in store.query(status="error")}
    assert errors["question 0"] == "400 bad request: nope"
    assert errors["question 2"] == "RuntimeError: provider bug"
    assert len([c for c in model.calls if c["query"] == "question 0"]) == 1  # not retried
    assert store.count(status="ok") == 3


def test_max_steps_is_incomplete_not_failed(store):
    model = FakeModel(behaviour={"question 0": "max_steps"})
    result = collector(model, store=store, max_steps=3).collect(queries(2))
    assert (result.ok, result.failed, result.incomplete) == (1, 0, 1)
    assert store.query(status="max_steps")[0].steps.__len__() == 3


# -- resume --------------------------------------------------------------------------------------


def test_resume_skips_finished_runs_and_retries_failed_ones(store):
    first = FakeModel(behaviour={"question 3": "model_error"})
    r1 = collector(first, store=store).collect(queries(6))
    assert (r1.ok, r1.failed, r1.resumed) == (5, 1, 0)

    second = FakeModel()
    r2 = collector(second, store=store).collect(queries(6))
    assert (r2.ok, r2.failed, r2.resumed) == (1, 0, 5)
    assert [c["query"] for c in second.calls] == ["question 3"]
    assert store.count() == 6 and store.count(status="ok") == 6

    third = FakeModel()
    r3 = collector(third, store=store).collect(queries(6))
    assert (r3.ok, r3.resumed, len(third.calls)) == (0, 6, 0)


def test_repeated_runs_do_not_leak_store_connections(store):
    for _ in range(3):
        collector(FakeModel(), store=store).collect(queries(2))
    assert len(store._connections) == 1  # the writer thread closes its own connection each run


class ThreadRecordingStore(SQLiteStore):
    """A real SQLite store that notes which thread each put ran on, and can fail one task's put."""

    def __init__(self, path, *, fail_task=None, **options):
        super().__init__(path, **options)
        self.put_threads: list[str] = []
        self.fail_task = fail_task

    def put(self, trajectory, **options):
        import threading

        self.put_threads.append(threading.current_thread().name)
        if trajectory.task_id == self.fail_task:
            from distillery.store import StoreError

            raise StoreError(f"{self.path}: disk full")
        return super().put(trajectory, **options)


@pytest.mark.parametrize(("synchronous", "thread"), [("NORMAL", "MainThread"), ("FULL", "distillery-store_0")])
def test_quick_stores_are_written_from_the_loop_and_fsyncing_ones_from_a_thread(tmp_path, synchronous, thread):
    store = ThreadRecordingStore(tmp_path / "store.db", synchronous=synchronous)
    assert store.put_is_quick == (synchronous == "NORMAL")
    result = collector(FakeModel(delay=0.01), store=store, concurrency=8).collect(queries(40))
    assert result.ok == 40 and store.count(status="ok") == 40
    assert set(store.put_threads) == {thread} and len(store.put_threads) == 40
    store.close()


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_a_store_failure_stops_the_collection_with_its_error_and_keeps_what_was_written(tmp_path, synchronous):
    from distillery.store import StoreError
    from distillery.tasks import task_id_for

    failing = task_id_for("question 10")
    store = ThreadRecordingStore(tmp_path / "store.db", synchronous=synchronous, fail_task=failing)
    with pytest.raises(StoreError, match="disk full"):
        collector(FakeModel(delay=0.005), store=store, concurrency=4).collect(queries(40))
    written = store.count()
    assert 0 < written < 40 and store.get_by_key(TrajectoryKey(failing, "fake:teacher")) is None
    result = collector(FakeModel(), store=SQLiteStore(tmp_path / "store.db")).collect(queries(40))
    assert (result.resumed, result.ok) == (written, 40 - written)  # a re-run resumes: nothing lost
    store.close()


def test_resume_is_per_model(store):
    collector(FakeModel(uri="fake:a"), store=store).collect(queries(3))
    other = FakeModel(uri="fake:b")
    result = collector(other, store=store).collect(queries(3))
    assert (result.ok, result.resumed) == (3, 0)
    assert store.count(model="fake:a") == 3 and store.count(model="fake:b") == 3


# -- budget --------------------------------------------------------------------------------------


def test_budget_stops_before_exceeding_the_cap(store):
    model = FakeModel(cost=0.01, delay=0.005)
    result = collector(model, store=store, concurrency=4, budget_usd=0.055).collect(queries(20))
    assert result.cost_usd <= 0.055 + 1e-12
    assert result.ok == 5  # 5 x $0.01 fits, a sixth would not
    assert result.stopped_by_budget
    assert result.skipped_budget == 15
    assert store.count() == 5
    assert result.budget_line() == "stopped by budget: $0.0500 of $0.0550, 15 tasks not started"


def test_budget_counts_all_steps_of_a_trajectory():
    model = FakeModel(cost=0.01)  # "add" tasks take two model calls: $0.02 each
    tasks = [f"add {i}" for i in range(10)]
    result = collector(model, concurrency=3, budget_usd=0.07).collect(tasks)
    assert result.ok == 3 and result.cost_usd == pytest.approx(0.06)
    assert result.skipped_budget == 7


def test_zero_budget_starts_nothing_and_no_budget_runs_all():
    model = FakeModel(cost=0.01)
    nothing = collector(model, budget_usd=0.0).collect(queries(3))
    assert (nothing.total, nothing.skipped_budget, len(model.calls)) == (0, 3, 0)
    everything = collector(FakeModel(cost=0.01)).collect(queries(3))
    assert everything.ok == 3 and not everything.stopped_by_budget


def test_free_models_are_never_stopped_by_a_budget():
    result = collector(FakeModel(cost=0.0), budget_usd=1.0, concurrency=4).collect(queries(8))
    assert result.ok == 8 and not result.stopped_by_budget


# -- samples, options, tools ---------------------------------------------------------------------


def test_n_samples_each_task_with_sampling_temperature(store):
    model = FakeModel()
    result = collector(model, store=store, n=3).collect(queries(2))
    assert result.ok == 6
    keys = {(t.task_id, t.sample_index) for t in store.iter_trajectories()}
    task_ids = {t.id for t in as_tasks(queries(2))}
    assert keys == {(tid, i) for tid in task_ids for i in range(3)}
    assert {c["temperature"] for c in model.calls} == {1.0}
    single = FakeModel()
    collector(single).collect(queries(1))
    assert single.calls[0]["temperature"] == 0.0
    explicit = FakeModel()
    collector(explicit, n=2, temperature=0.7).collect(queries(1))
    assert {c["temperature"] for c in explicit.calls} == {0.7}


def test_collect_works_inside_a_running_event_loop():
    """Notebooks run a loop already; the blocking collect() must still work there."""

    async def notebook_cell():
        return collector(FakeModel(), concurrency=2).collect(queries(3))

    assert asyncio.run(notebook_cell()).ok == 3


def test_repeated_collects_in_a_notebook_do_not_leak_store_connections(store):
    async def notebook_cell(k):
        return collector(FakeModel(), store=store, concurrency=2).collect(queries(k))

    for k in (2, 4, 6):
        assert asyncio.run(notebook_cell(k)).ok == 2
    assert store.count() == 6
    assert len(store._connections) == 1  # only the connection the test thread opened


def test_logprob_options_reach_the_model():
    model = FakeModel()
    collector(model, top_logprobs=5).collect(queries(1))
    assert model.calls[0]["logprobs"] is True and model.calls[0]["top_logprobs"] == 5


def test_tools_run_through_the_agent_and_checkers_judge(store):
    model = FakeModel()
    tasks = [Task(id="sum", query="add two and three", expected=5, checker="numeric", tags=["math"])]
    result = collector(model, store=store, tags=["run-1"], system="be brief").collect(tasks)
    assert (result.ok, result.succeeded, result.checked) == (1, 1, 1)
    stored = store.get_by_key(TrajectoryKey("sum", "fake:teacher", 0))
    assert stored.tool_calls[0].name == "add"
    assert stored.steps[0].tool_results[0].content == "5"
    assert stored.outcome.success is True
    assert stored.tags == ["math", "run-1"]
    assert stored.system == "be brief"
    assert [s.name for s in model.calls[0]["tools"]] == ["add"]


def test_collect_teacher_trajectories_seed_api(tmp_path, store):
    model = FakeModel()
    out = collect_teacher_trajectories(["b?", "a?", "c?"], model)
    assert [t.query for t in out] == ["b?", "a?", "c?"]
    assert all(t.final_answer == f"answer to {t.query}" for t in out)

    path = tmp_path / "q.txt"
    path.write_text("# comment\nfirst\nsecond\n")
    stored = collect_teacher_trajectories(path, model, store=store, n=2)
    assert [(t.query, t.sample_index) for t in stored] == [("first", 0), ("first", 1), ("second", 0), ("second", 1)]
    # A second call with the same store returns the stored trajectories without calling the model.
    calls = len(model.calls)
    again = collect_teacher_trajectories(path, model, store=store, n=2)
    assert len(model.calls) == calls
    assert [t.id for t in again] == [t.id for t in stored]


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="concurrency"):
        TeacherCollector(FakeModel(), concurrency=0)
    with pytest.raises(ConfigError, match="unknown model URI"):
        TeacherCollector("nope:model")
    with pytest.raises(ConfigError, match="duplicate task id"):
        as_tasks(["same", "same"])


def test_errors_are_redacted_before_storing(store, monkeypatch):
    secret = "sk-test-" + "9" * 24
    monkeypatch.setenv("SOMEPROVIDER_API_KEY", secret)
    model = FakeModel(failures={"question 0": [ModelError(f"401 invalid key {secret}")]})
    collector(model, store=store).collect(queries(1))
    stored = store.query()[0]
    assert secret not in stored.error and "[redacted]" in stored.error
    assert redact_secrets(f"x{secret}x") == "x[redacted]x"


def test_result_summary_mentions_counts():
    result = CollectResult(ok=3, failed=1, resumed=2, cost_usd=0.5, wall_s=1.0)
    assert "3 ok" in result.summary() and "1 failed" in result.summary() and "2 resumed" in result.summary()


def _user(text):
    from distillery.trajectory import Message

    return Message(role="user", content=text)


# -- CLI -----------------------------------------------------------------------------------------


@pytest.fixture
def fake_provider():
    """Register `fake:` as a provider so the CLI can build a FakeModel from a URI."""
    models: list[FakeModel] = []

    def factory(name, **options):
        model = FakeModel(uri=f"fake:{name}", cost=0.001)
        model.options = options
        models.append(model)
        return model

    register_provider("fake", factory)
    yield models
    _PROVIDERS.pop("fake", None)


REPO = Path(__file__).resolve().parents[1]
TOOLS_PATH = "tests.test_collect:TOOL_LIST"
TOOL_LIST = [add]


def run_cli(*args):
    from distillery.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def test_cli_collects_and_resumes(tmp_path, fake_provider):
    queries_file = tmp_path / "q.jsonl"
    queries_file.write_text("\n".join(json.dumps({"id": f"t{i}", "query": f"add {i}", "expected": 5, "checker": "numeric"}) for i in range(4)))
    db = tmp_path / "s.db"
    args = ["collect", "--teacher", "fake:big", "--queries", str(queries_file), "--store", str(db),
            "--tools", TOOLS_PATH, "--no-progress", "--n", "2", "--tag", "cli", "--base-url", "http://127.0.0.1:9/v1"]
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    assert "ok (final answer)" in first.output and "8" in first.output
    assert fake_provider[0].options == {"base_url": "http://127.0.0.1:9/v1"}
    store = SQLiteStore(db)
    assert store.count(model="fake:big", tags_all=["cli"], success=True) == 8
    second = run_cli(*args)
    assert second.exit_code == 0
    assert "resumed (already stored)" in second.output
    assert fake_provider[1].calls == []

    export = run_cli("store", "export", str(tmp_path / "out.jsonl"), "--store", str(db), "--success")
    assert export.exit_code == 0
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 8
    stats = run_cli("store", "stats", "--store", str(db))
    assert stats.exit_code == 0 and "fake:big" in stats.output


def test_cli_budget_stops_and_reports(tmp_path, fake_provider):
    queries_file = tmp_path / "q.txt"
    queries_file.write_text("\n".join(queries(10)))
    result = run_cli("collect", "-t", "fake:x", "-q", str(queries_file), "--store", str(tmp_path / "s.db"),
                     "--tools", TOOLS_PATH, "--progress", "--budget", "0.0035")
    assert result.exit_code == 0, result.output
    assert "stopped by budget" in result.output
    assert SQLiteStore(tmp_path / "s.db").count() == 3


def test_cli_tool_schemas_replace_what_the_model_sees(tmp_path, fake_provider):
    schemas = tmp_path / "tools.json"
    schemas.write_text(json.dumps([{"type": "function", "function": {"name": "add", "description": "Sum two ints.",
                                    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}]))
    queries_file = tmp_path / "q.txt"
    queries_file.write_text("add please\n")
    result = run_cli("collect", "-t", "fake:x", "-q", str(queries_file), "--store", str(tmp_path / "s.db"),
                     "--tools", TOOLS_PATH, "--tool-schemas", str(schemas), "--no-progress")
    assert result.exit_code == 0, result.output
    assert fake_provider[0].calls[0]["tools"][0].description == "Sum two ints."


CLI_ERRORS = [
    # (description, extra args or file setup, expected fragment)
    ("unknown model", ["--teacher", "gemini:pro"], "unknown model URI 'gemini:pro'"),
    ("missing openai key", ["--teacher", "openai:gpt-4o"], "set the OPENAI_API_KEY environment variable"),
    ("missing anthropic key", ["--teacher", "anthropic:claude-opus-4-6"], "set the ANTHROPIC_API_KEY environment variable"),
    ("malformed queries", ["--queries", "BAD"], "bad.jsonl:2: not valid JSON"),
    ("damaged store", ["--store", "DAMAGED"], "store is not writable (file is not a database)"),
    ("bad tools path", ["--tools", "no_such_module_xyz:TOOLS"], "cannot import no_such_module_xyz"),
    ("invalid schema", ["--tool-schemas", "BADSCHEMA"], "not valid JSON Schema"),
    ("schema without tool", ["--tool-schemas", "ORPHAN"], "has no implementation in the tools"),
]


@pytest.fixture
def error_inputs(tmp_path):
    """Files for the error cases: placeholders in CLI_ERRORS name them."""
    good = tmp_path / "q.txt"
    good.write_text("hello\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "fine"}\n{"query": oops}\n')
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad_schema = tmp_path / "schema.json"
    bad_schema.write_text(json.dumps([{"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integr"}}}}]))
    orphan = tmp_path / "orphan.json"
    orphan.write_text(json.dumps([{"name": "search_web", "parameters": {"type": "object", "properties": {}}}]))
    damaged = tmp_path / "damaged.db"  # an SQLite header, then garbage: it passes the parse-time check
    damaged.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)
    substitutions = {"BAD": str(bad), "MISSING": str(tmp_path / "nope.txt"), "UNWRITABLE": str(blocker / "s.db"),
                     "BADSCHEMA": str(bad_schema), "ORPHAN": str(orphan), "DAMAGED": str(damaged)}

    def argv(override):
        args = {"--teacher": "world:teacher", "--queries": str(good), "--store": str(tmp_path / "s.db"), "--tools": TOOLS_PATH}
        args[override[0]] = substitutions.get(override[1], override[1])
        return ["collect", *[item for pair in args.items() for item in pair], "--no-progress"]

    return argv


@pytest.mark.parametrize("name,override,fragment", CLI_ERRORS, ids=[c[0] for c in CLI_ERRORS])
def test_cli_errors_are_one_line_distillery_errors(error_inputs, monkeypatch, name, override, fragment):
    from distillery.errors import DistilleryError

    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    result = run_cli(*error_inputs(override))
    # cli.main() prints a DistilleryError as one line and exits 1 (checked end to end below).
    assert isinstance(result.exception, DistilleryError), result.output
    assert fragment in str(result.exception)
    assert "\n" not in str(result.exception)


@pytest.mark.parametrize("override, fragment", [(["--queries", "MISSING"], "nope.txt: no such file"),
                                                (["--store", "UNWRITABLE"], "is a file, not a directory")])
def test_paths_that_cannot_be_used_are_usage_errors(error_inputs, override, fragment):
    """Checked while the command line is parsed (exit 2, the option named), before anything is loaded."""
    from tests.test_cli_usage_errors import assert_usage_error, invoke

    assert_usage_error(invoke(*error_inputs(override)), f"'{override[0]}'", fragment)


def test_cli_error_through_main_exits_1_without_traceback(error_inputs):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    for override, fragment in [(["--store", "DAMAGED"], "store is not writable"),
                               (["--teacher", "openai:gpt-4o"], "set the OPENAI_API_KEY environment variable")]:
        proc = subprocess.run([sys.executable, "-m", "distillery.cli", *error_inputs(override)],
                              capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert fragment in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_bundled_example_queries_load_and_their_answers_check():
    from distillery.tasks import load_tasks

    tasks = load_tasks(REPO / "examples" / "queries.jsonl")
    assert len(tasks) >= 10
    checked = [t for t in tasks if t.checker]
    assert checked and all(t.check(f"The answer is {t.expected}.").success for t in checked)


# -- several processes ---------------------------------------------------------------------------


def test_processes_need_names_not_objects(tmp_path):
    with pytest.raises(ConfigError, match="model as a URI"):
        TeacherCollector(FakeModel(), store=tmp_path / "s.db", processes=2)
    with pytest.raises(ConfigError, match="import path"):
        TeacherCollector("openai:gpt-4o", [add], store=tmp_path / "s.db", processes=2, model_options={"base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(ConfigError, match="SQLite store"):
        TeacherCollector("openai:gpt-4o", TOOLS_PATH, processes=2, model_options={"base_url": "http://127.0.0.1:9/v1"})


@pytest.mark.timeout(180)
def test_processes_shard_the_runs_into_one_store(tmp_path):
    """Two shard processes against a local OpenAI-compatible server (the real SDK on the wire)."""
    wire = pytest.importorskip("tests.wire.openai_server")
    from distillery.trajectory import ToolSpec

    def responder(request):
        messages = request.json["messages"]
        if messages[-1]["role"] == "tool":
            return wire.chat_completion([wire.choice(f"The sum is {messages[-1]['content']}.")], usage_=wire.usage(40, 8))
        call = wire.function_tool_call("add", {"a": 2, "b": 3})
        return wire.chat_completion([wire.choice(None, tool_calls=[call])], usage_=wire.usage(30, 12))

    schema = ToolSpec(name="add", description="Sum two ints (override).", parameters=add.spec.parameters)
    tasks = [Task(id=f"t{i}", query=f"add {i}", expected=5, checker="numeric") for i in range(6)]
    with wire.ScriptedOpenAIServer(responder) as server:
        options = {"base_url": server.base_url, "api_key": "test"}
        collector = TeacherCollector("openai:gpt-4o", TOOLS_PATH, store=tmp_path / "s.db", processes=2, n=2,
                                     concurrency=4, progress=False, model_options=options, tool_schemas=[schema])
        result = collector.collect(tasks)
        assert (result.ok, result.failed, result.succeeded) == (12, 0, 12)
        assert result.cost_usd > 0
        assert {r.json["tools"][0]["function"]["description"] for r in server.requests} == {"Sum two ints (override)."}

        store = SQLiteStore(tmp_path / "s.db")
        keys = [(t.task_id, t.sample_index) for t in store.iter_trajectories()]
        assert sorted(keys) == sorted((f"t{i}", s) for i in range(6) for s in range(2))
        assert store.integrity_check() == "ok"

        # Resume works across process runs, and a split budget still holds the cap.
        more = tasks + [Task(id=f"u{i}", query=f"add {i}") for i in range(10)]
        per_run = result.cost_usd / 12
        capped = TeacherCollector("openai:gpt-4o", TOOLS_PATH, store=store, processes=2, concurrency=2,
                                  progress=False, model_options=options, budget_usd=per_run * 5.5)
        second = capped.collect(more)
        assert second.resumed == 6
        assert second.cost_usd <= per_run * 5.5 + 1e-12
        assert second.stopped_by_budget and second.ok + second.skipped_budget == 10
