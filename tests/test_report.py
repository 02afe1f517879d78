"""`distillery report` from an eval run on scripted tiers: the file, its figures, the viewer's data, GET /report.

The eval runs through the CLI on a fake provider (scripted models, no weights, no network), so the
whole path is covered: `distillery eval --out` saves the result and its trajectories, `distillery
report` renders them. The browser checks are in test_report_browser.py.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from typer.testing import CliRunner

from distillery.cli import app
from distillery.evaluation.evaluate import evaluate
from distillery.evaluation.results import save_results
from distillery.models import register_provider
from distillery.report import data
from distillery.report.plots import pareto
from distillery.report.registry import latest_report
from distillery.routing.cascade import CascadeConfig, TierConfig
from distillery.tasks import Task
from distillery.tools import ToolBox, tool
from distillery.trajectory import Usage
from tests.routing_fakes import ScriptedModel, answer_tokens, n_tool_messages, tool_call_tokens, turn_from_tokens

STOCK = {"SKU-1": 12, "SKU-2": 30, "SKU-3": 7, "SKU-4": 55, "SKU-5": 3, "SKU-6": 81}
# (family, task tier) of each SKU's tasks
KINDS = {"SKU-1": ("lookup", "1"), "SKU-2": ("lookup", "1"), "SKU-3": ("lookup", "2"), "SKU-4": ("lookup", "2"),
         "SKU-5": ("audit", "3"), "SKU-6": ("audit", "3")}


@tool
def get_stock(sku: str) -> int:
    """Units in stock.

    Args:
        sku: The SKU.
    """
    return STOCK.get(sku, 0)


TASKS = [Task(id=f"t{i:02d}", query=f"How many units of {sku}?", expected=n, checker="numeric",
              tags=[KINDS[sku][0], f"tier:{KINDS[sku][1]}"])
         for i, (sku, n) in enumerate(list(STOCK.items()) * 3)]
# The student is right and sure on SKU-1/2, wrong and unsure on SKU-3/4/6, and wrong but sure on SKU-5
# (a confident mistake the cascade keeps). The teacher is right on everything but SKU-6.
STUDENT = {"right": {"SKU-1", "SKU-2"}, "sure": {"SKU-1", "SKU-2", "SKU-5"}}
TEACHER = {"right": {"SKU-1", "SKU-2", "SKU-3", "SKU-4", "SKU-5"}, "sure": set(STOCK)}


def sku_of(messages):
    return next(m.content for m in messages if m.role == "user").split()[-1].rstrip("?")


def make_script(knows):
    def script(messages, call_index, n, temperature):
        sku = sku_of(messages)
        lp = -0.05 if sku in knows["sure"] else -2.0
        usage = Usage(input_tokens=500, output_tokens=20)
        if n_tool_messages(messages) == 0:
            asked = sku if sku in knows["right"] else "SKU-9"
            tokens = tool_call_tokens("get_stock", f'{{"sku": "{asked}"}}', lp_name=lp, lp_args=lp,
                                      reasoning=(f"I will look up {asked}.\n", -0.01))
        else:
            value = next(m.content for m in messages if m.role == "tool")
            tokens = answer_tokens(f"There are {value} units.", lp)
        return [turn_from_tokens(tokens, usage=usage)] * n

    return script


def fake_model(name: str, **options):
    return ScriptedModel(f"fake:{name}", make_script(TEACHER if name == "teacher" else STUDENT))


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_eval(directory, escalate: str = "step"):
    """`distillery eval` on the scripted tiers into `directory`; returns (eval.json, cascade.toml)."""
    register_provider("fake", fake_model)
    (directory / "prices.toml").write_text(
        "[fake.student]\ninput = 0.05\noutput = 0.2\n[fake.teacher]\ninput = 5.0\noutput = 25.0\n")
    tasks = directory / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(t.model_dump(include={"id", "query", "expected", "checker", "tags"})) + "\n"
                             for t in TASKS))
    config = directory / "cascade.toml"
    config.write_text(f'escalate = "{escalate}"\n[[tiers]]\nmodel = "fake:student"\nthreshold = 0.5\n'
                      'scorer = "logprob-mean"\n\n[[tiers]]\nmodel = "fake:teacher"\n\n'
                      "[calibration]\npredicted_task_escalation_rate = 0.4\npredicted_success = 0.8\n")
    out = directory / "runs" / "eval.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISTILLERY_PRICES", str(directory / "prices.toml"))
        result = invoke("eval", "--config", config, "--out", out, "--tasks", tasks, "--tools",
                        "tests.test_report:get_stock", "--n", "0", "--concurrency", "4")
    assert result.exit_code == 0, result.output
    return out, config


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out, config = run_eval(tmp_path_factory.mktemp("report"))
    result = invoke("report", out)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "GET /report" in result.output
    assert latest_report(config) == out.with_suffix(".html").resolve()  # what `distillery serve` will show
    return out, config, out.with_suffix(".html")


def test_eval_saves_the_trajectories_the_viewer_needs(evaluated):
    out, _, _ = evaluated
    results = json.loads(out.read_text())
    saved = results["trajectories"]
    assert saved["path"] == "eval.trajectories.jsonl"
    assert [run["name"] for run in saved["runs"]] == ["cascade (calibrated)", "student alone (fake:student)"]
    lines = (out.parent / saved["path"]).read_text().splitlines()
    assert len(lines) == 2 * len(TASKS)
    first = json.loads(lines[0])
    assert first["task_id"] == "t00" and all("logprobs" not in step for step in first["steps"])
    # Per-step confidences of the student alone, labelled by the teacher's action at the same state.
    steps = results["step_confidences"][0]
    assert steps["tier"] == 0 and len(steps["confidence"]) == len(steps["wrong"]) == 2 * len(TASKS)
    # Wrong steps per round of six tasks: SKU-3, -4 and -5 both steps; SKU-6 only its answer (the teacher
    # looks up the same wrong SKU there, so the call agrees with the reference).
    assert sum(steps["wrong"]) == 3 * (2 + 2 + 2 + 1)
    assert results["per_task"][0]["tags"] == ["lookup", "tier:1"]


def test_the_file_is_self_contained_and_the_summary_is_the_results(evaluated):
    out, _, html_path = evaluated
    html = html_path.read_text()
    results = json.loads(out.read_text())
    assert html.startswith("<!doctype html>") and len(html) < 1_000_000
    # Nothing is fetched: no external script, stylesheet, font or image.
    assert not re.search(r"<(script|img|iframe)[^>]*\bsrc=|<link\b|@import|url\(\s*['\"]?https?:", html)
    assert "https://" not in html and "http://" not in html.replace("http://www.w3.org/", "")
    assert html.count("<svg") >= 3  # deferral, frontier, reliability
    for row in results["rows"]:
        cells = re.search(rf'<tr data-row="{re.escape(row["name"])}"[^>]*>(.*?)</tr>', html, re.S).group(1)
        assert f'data-metric="success" data-value="{row["success"]}">{100 * row["success"]:.1f}%<' in cells
    assert 'data-testid="world-label"' not in html  # fake tiers and tasks: not the offline world


def test_the_offline_world_label_follows_the_result(evaluated, tmp_path):
    out, _, _ = evaluated
    results = json.loads(out.read_text())
    results["meta"]["offline_world"] = True
    results["trajectories"]["path"] = str(out.parent / results["trajectories"]["path"])
    world = tmp_path / "world.json"
    world.write_text(json.dumps(results))
    from distillery.report import write_report

    html = write_report(world).path.read_text()
    assert 'data-testid="world-label"' in html and "Deferral curve (offline world)" in html


def test_breakdowns_and_viewer_records(evaluated):
    out, _, _ = evaluated
    loaded = data.load(out)
    tables = data.breakdowns(loaded.results, loaded.runs)
    assert tables["columns"] == ["student alone", "teacher alone", "cascade"]
    families = {row["name"]: row for row in tables["families"]}
    assert families["lookup"]["n"] == 12 and families["lookup"]["success"] == [0.5, 1.0, 1.0]
    assert families["audit"]["success"] == [0.0, 0.5, 0.0]  # SKU-5 kept wrong, SKU-6 wrong at the teacher too
    assert [row["name"] for row in tables["tiers"]] == ["1", "2", "3"]
    records = data.viewer_records(loaded.results, loaded.runs)
    assert len(records) == len(TASKS)
    escalated = next(r for r in records if r.get("escalated"))
    step = escalated["steps"][0]
    assert step["rejected"][0]["calls"][0]["args"] == '{"sku": "SKU-9"}'
    assert step["rejected"][0]["threshold"] == 0.5 and step["rejected"][0]["confidence"] < 0.5
    assert step["by"] == "fake:teacher" and step["results"][0]["name"] == "get_stock"


def doubts_its_answer_on_sku_3(messages, call_index, n, temperature):
    """A student that calls the tool confidently, then doubts its answer on SKU-3 (which restarts that task)."""
    sku = sku_of(messages)
    if n_tool_messages(messages) == 0:
        tokens = tool_call_tokens("get_stock", f'{{"sku": "{sku}"}}', lp_name=-0.05, lp_args=-0.05)
    else:
        value = next(m.content for m in messages if m.role == "tool")
        tokens = answer_tokens(f"Maybe {value}.", -0.05 if sku != "SKU-3" else -2.0)
    return [turn_from_tokens(tokens, usage=Usage(input_tokens=500, output_tokens=20))] * n


def run_restart_eval(directory):
    """An eval with `escalate = "restart"` on six tasks, saved to `directory/eval.json`; returns that path."""
    config = CascadeConfig(tiers=[TierConfig("fake:student", threshold=0.5), TierConfig("fake:teacher")],
                           escalate="restart")
    models = [ScriptedModel("fake:student", doubts_its_answer_on_sku_3), ScriptedModel("fake:teacher", make_script(TEACHER))]
    results = evaluate(TASKS[:6], config, tools=ToolBox([get_stock]), models=models, reference_labels=False,
                       random_router=False)
    return save_results(results, directory / "eval.json")[0]


def test_restart_shows_the_abandoned_attempt_as_the_cascade_recorded_it(tmp_path):
    # Under restart the cascade records the abandoned attempt on the first kept step: the viewer
    # shows its steps and the doubted proposal as they were.
    loaded = data.load(run_restart_eval(tmp_path))
    record = next(r for r in data.viewer_records(loaded.results, loaded.runs) if "restarted" in r)
    assert record["task"] == "t02" and record["alone"]["doubted"] == 1 and record["alone"]["recorded"]
    assert record["alone"]["steps"][0]["calls"][0]["name"] == "get_stock"
    assert record["alone"]["steps"][1]["text"].startswith("Maybe 7.") and record["alone"]["steps"][1]["confidence"] < 0.5
    assert record["steps"][0]["abandoned"]["steps"] == 1 and record["steps"][0]["by"] == "fake:teacher"
    assert "attempts_detail" not in record["steps"][0]["abandoned"]


def test_older_restart_results_fall_back_to_the_student_alone_run(tmp_path):
    loaded = data.load(run_restart_eval(tmp_path))
    for trajectory in next(runs for name, runs in loaded.runs.items() if name.startswith("cascade")):
        if trajectory.steps and trajectory.steps[0].routing.abandoned_attempt is not None:
            trajectory.steps[0].routing.abandoned_attempt.attempts_detail = []
    record = next(r for r in data.viewer_records(loaded.results, loaded.runs) if "restarted" in r)
    assert "recorded" not in record["alone"] and record["alone"]["model"] == "fake:student"
    assert record["alone"]["steps"][1]["text"].startswith("Maybe 7.")


def test_a_result_without_saved_trajectories_still_renders(evaluated, tmp_path):
    out, _, _ = evaluated
    results = json.loads(out.read_text())
    for key in ("trajectories", "step_confidences"):
        results.pop(key)
    for task in results["per_task"]:
        task.pop("tags")
    old = tmp_path / "old.json"
    old.write_text(json.dumps(results))
    result = invoke("report", old, "--out", tmp_path / "old.html")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "old.html").read_text()
    assert 'data-testid="viewer-missing"' in html and "task level" in html


def test_a_thousand_trajectories_stay_under_a_few_megabytes(evaluated, tmp_path):
    out, _, _ = evaluated
    loaded = data.load(out)
    cascade = loaded.runs["cascade (calibrated)"]
    many = [cascade[i % len(cascade)].model_copy(update={"task_id": f"t{i:04d}"}) for i in range(1000)]
    jsonl = tmp_path / "many.jsonl"
    jsonl.write_text("".join(t.model_dump_json() + "\n" for t in many))
    result = invoke("report", out, "--trajectories", jsonl, "--out", tmp_path / "many.html")
    assert result.exit_code == 0 and "1000 trajectories" in result.output
    assert (tmp_path / "many.html").stat().st_size < 3_000_000


def test_family_and_tier_from_tags_and_the_frontier():
    assert data.task_family(["escalated", "lookup", "tier:2"]) == "lookup"
    assert data.task_family(["tier:2", "family:billing", "x"]) == "billing"
    assert data.task_tier(["lookup", "tier:hard"]) == "hard" and data.task_tier(["lookup"]) is None
    assert pareto([(3.0, 0.9), (1.0, 0.5), (2.0, 0.4), (2.5, 0.95), (4.0, 0.95)]) == [(1.0, 0.5), (2.5, 0.95)]


def test_serve_answers_get_report_with_the_latest_report_for_its_cascade(evaluated):
    from distillery.serve import GatewaySettings, create_app
    from distillery.serve.backend import CascadeBackend
    from tests.serve_helpers import ThreadedGateway, scripted_backend

    _, config, _ = evaluated
    backend = CascadeBackend(scripted_backend().cascade, source=str(config))
    with ThreadedGateway(create_app(backend, GatewaySettings(api_keys=["sk-right"]))) as server:
        assert httpx.get(server.url + "/report").status_code == 401
        response = httpx.get(server.url + "/report", headers={"authorization": "Bearer sk-right"})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert response.text == latest_report(config).read_text() and response.text.startswith("<!doctype html>")
    with ThreadedGateway(create_app(scripted_backend(), GatewaySettings())) as server:  # no config file: no report
        response = httpx.get(server.url + "/report")
        assert response.status_code == 404 and "distillery report" in response.json()["error"]["message"]
