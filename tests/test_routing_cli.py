"""`distillery calibrate`, `eval` (with gates and --from-json) and `cascade check/run` through the CLI."""

import json

import pytest
from typer.testing import CliRunner

from distillery.cli import app
from distillery.models import register_provider
from tests.test_evaluate import TASKS, STOCK, make_script
from tests.routing_fakes import ScriptedModel


def fake_model(name: str, **options):
    knows = set(STOCK) if name == "teacher" else {"SKU-1", "SKU-2"}
    model = ScriptedModel(f"fake:{name}", make_script(knows))
    return model


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    register_provider("fake", fake_model)
    monkeypatch.setenv("DISTILLERY_PRICES", str(tmp_path / "prices.toml"))
    (tmp_path / "prices.toml").write_text(
        "[fake.student]\ninput = 0.05\noutput = 0.2\n[fake.teacher]\ninput = 5.0\noutput = 25.0\n"
    )
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(t.model_dump(include={"id", "query", "expected", "checker"})) + "\n" for t in TASKS))
    (tmp_path / "cascade.toml").write_text(
        '[[tiers]]\nmodel = "fake:student"\nthreshold = 0.9\nscorer = "logprob-mean"\n\n[[tiers]]\nmodel = "fake:teacher"\n'
    )
    return tmp_path


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_calibrate_then_eval_with_gates(workdir):
    config = workdir / "cascade.toml"
    common = ["--tasks", workdir / "tasks.jsonl", "--tools", "tests.test_evaluate:get_stock", "--n", "0"]
    result = invoke("calibrate", "--config", config, "--target", "1.0", "--report", workdir / "cal.json", *common)
    assert result.exit_code == 0, result.output
    from distillery.routing import load_cascade_config

    calibrated = load_cascade_config(config)
    # The student's two confidence levels are exp(-0.05) and exp(-2): the threshold lands between them.
    assert 0.14 < calibrated.thresholds[0] < 0.95
    assert calibrated.calibration["predicted_task_escalation_rate"] == 0.5 and calibrated.calibration["met"]

    out = workdir / "eval.json"
    result = invoke("eval", "--config", config, "--out", out, "--min-success", "0.99", *common)
    assert result.exit_code == 0, result.output
    assert out.exists() and out.with_suffix(".png").exists() and "APGR" in result.output
    saved = json.loads(out.read_text())
    assert [row["name"] for row in saved["rows"]][2:] == ["cascade (calibrated)", "random router (same escalation rate)", "oracle router"]
    assert saved["rows"][2]["success"] == 1.0 and saved["calibration"]["task_escalation_gap"] == 0.0
    # Gates from the saved JSON, no model calls: a cost cap of $0 fails with the gate exit code.
    result = invoke("eval", "--from-json", out, "--max-cost", "0")
    assert result.exit_code == 3 and "gate failed" in result.output


def test_cascade_check_and_run(workdir):
    result = invoke("cascade", "check", workdir / "cascade.toml")
    assert result.exit_code == 0 and "fake:teacher" in result.output
    result = invoke("cascade", "run", "How many units of SKU-3?", "--config", workdir / "cascade.toml",
                    "--tools", "tests.test_evaluate:get_stock", "--json")
    trajectory = json.loads(result.output)
    assert trajectory["steps"][0]["producer"] == "fake:teacher" and trajectory["steps"][0]["escalated"]


def test_bad_config_is_one_line_without_traceback(workdir, capsys):
    import subprocess
    import sys

    bad = workdir / "bad.toml"
    bad.write_text('[[tiers]]\nmodel = "world:student-xs"\nthreshold = 2\n[[tiers]]\nmodel = "world:teacher"\n')
    run = subprocess.run([sys.executable, "-m", "distillery.cli", "cascade", "check", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "tiers[0].threshold = 2 is outside [0, 1]" in run.stderr


def test_calibrate_with_delta_refuses_what_it_cannot_certify(workdir):
    from distillery.errors import ConfigError

    config = workdir / "cascade.toml"
    before = config.read_text()
    common = ["--tasks", workdir / "tasks.jsonl", "--tools", "tests.test_evaluate:get_stock", "--n", "0"]
    with pytest.raises(ConfigError, match=r"no thresholds are certified for 0.98 x the teacher's success at delta 0.1 "
                                          r"on \d+ validation tasks; the best certifiable target is"):
        invoke("calibrate", "--config", config, "--target", "0.98", "--delta", "0.1", "--report", workdir / "cal.json",
               *common)
    assert config.read_text() == before  # nothing written
    certification = json.loads((workdir / "cal.json").read_text())["certification"]
    assert certification["certified"] is False and certification["procedure"] == "learn-then-test"
    result = CliRunner().invoke(app, ["calibrate", "--config", str(config), "--absolute", "--target", "0.9", *map(str, common)])
    assert result.exit_code == 2 and "--absolute needs --delta" in result.output


def _failing_model(name: str, **options):
    """A tier whose server never answers properly: every call is a 503 (each run ends with status error)."""
    return ScriptedModel(f"dead:{name}", make_script(set()), fail=True)


def _flaky_model(name: str, **options):
    """A teacher that fails on SKU-4's tasks only (3 of 12) and is right on the others."""
    from distillery.errors import ModelError
    from tests.test_evaluate import sku_of

    script = make_script(set(STOCK))

    def flaky(messages, call_index, n, temperature):
        if sku_of(messages) == "SKU-4":
            raise ModelError(f"flaky:{name}: HTTP 502 bad gateway")
        return script(messages, call_index, n, temperature)

    return ScriptedModel(f"flaky:{name}", flaky)


@pytest.mark.parametrize("dead_tier", [0, 1])
def test_calibrate_refuses_a_tier_whose_every_run_failed(workdir, dead_tier):
    """An unreachable teacher would make every target "met" (0 x its success is 0): nothing is written."""
    from tests.test_cli_usage_errors import assert_failed_run, invoke as run_cli

    register_provider("dead", _failing_model)
    models = ["fake:student", "fake:teacher"]
    models[dead_tier] = ["dead:student", "dead:teacher"][dead_tier]
    config = workdir / "dead.toml"
    config.write_text(f'[[tiers]]\nmodel = "{models[0]}"\nthreshold = 0.9\n\n[[tiers]]\nmodel = "{models[1]}"\n')
    before = config.read_text()
    outcome = run_cli("calibrate", "--config", config, "--target", "0.98", "--report", workdir / "cal.json",
                      "--tasks", workdir / "tasks.jsonl", "--tools", "tests.test_evaluate:get_stock", "--n", "0")
    assert_failed_run(outcome, str(config), f"tiers[{dead_tier}] ({models[dead_tier]})",
                      "failed on all 12 of 12 validation tasks", "first error:", "HTTP 503", "not changed")
    assert config.read_text() == before and not (workdir / "cal.json").exists()


def test_calibrate_reports_runs_that_failed(workdir):
    register_provider("flaky", _flaky_model)
    config = workdir / "flaky.toml"
    config.write_text('[[tiers]]\nmodel = "fake:student"\nthreshold = 0.9\n\n[[tiers]]\nmodel = "flaky:teacher"\n')
    result = invoke("calibrate", "--config", config, "--target", "0.98", "--report", workdir / "cal.json",
                    "--tasks", workdir / "tasks.jsonl", "--tools", "tests.test_evaluate:get_stock", "--n", "0")
    assert result.exit_code == 0, result.output
    assert json.loads((workdir / "cal.json").read_text())["failed_runs"] == {"flaky:teacher": 3}


def test_world_split_tasks_run_against_that_splits_sealed_tools():
    from distillery.commands.routing import _tasks_and_tools
    from distillery.trajectory import ToolCall
    from distillery.world.tasks import generate_tasks

    train_product = next(t.metadata["entities"]["product"] for t in generate_tasks("train", 200, seed=0)
                         if t.metadata["family"] == "price")
    tasks, tools = _tasks_and_tools(None, "test", 200, 0, None)
    assert {task.metadata["split"] for task in tasks} == {"test"}
    lookup = tools.run(ToolCall(name="get_product", arguments={"product": train_product}), inline=True)
    assert lookup.is_error and "no product" in lookup.content  # a train row is out of a test run's reach
    test_product = next(t.metadata["entities"]["product"] for t in tasks if t.metadata["family"] == "price")
    assert not tools.run(ToolCall(name="get_product", arguments={"product": test_product}), inline=True).is_error
