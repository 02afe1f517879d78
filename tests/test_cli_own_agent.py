"""Bringing your own agent through the CLI (issue #16): tools from the current directory, --system on
calibrate/eval, `base_url` on a tier, readable `--help`, the student row of `eval`, and the warnings
`serve` and `cascade check` print before trusting a config."""

import io
import json
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

from distillery.cli import app
from distillery.commands.routing import results_table
from distillery.models import _PROVIDERS
from tests.routing_fakes import ScriptedModel
from tests.test_evaluate import TASKS, STOCK, make_script

MY_TOOLS = '''
from distillery.tools import tool


@tool
def get_stock(sku: str) -> int:
    """Units in stock.

    Args:
        sku: The SKU.
    """
    return {stock!r}.get(sku, 0)


TOOLS = [get_stock]
'''


@pytest.fixture()
def own_agent(tmp_path, monkeypatch):
    """A project directory as a user has it: my_tools_<n>.py, tasks.jsonl, cascade.toml; fake tiers."""
    models: dict[str, ScriptedModel] = {}
    options: dict[str, dict] = {}

    def factory(name, **model_options):
        knows = set(STOCK) if name == "teacher" else {"SKU-1", "SKU-2"}
        models[name] = ScriptedModel(f"fake:{name}", make_script(knows))
        options[name] = model_options
        return models[name]

    monkeypatch.setitem(_PROVIDERS, "fake", factory)
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading tools from the cwd puts it on sys.path
    monkeypatch.setenv("DISTILLERY_PRICES", str(tmp_path / "prices.toml"))
    (tmp_path / "prices.toml").write_text("[fake.student]\ninput = 0.05\noutput = 0.2\n"
                                          "[fake.teacher]\ninput = 5.0\noutput = 25.0\n")
    module = f"my_tools_{tmp_path.name.replace('-', '_')}"  # unique: imported modules are cached per process
    (tmp_path / f"{module}.py").write_text(MY_TOOLS.format(stock=STOCK))
    (tmp_path / "tasks.jsonl").write_text(
        "".join(json.dumps(t.model_dump(include={"id", "query", "expected", "checker"})) + "\n" for t in TASKS[:4]))
    (tmp_path / "cascade.toml").write_text(
        '[[tiers]]\nmodel = "fake:student"\nthreshold = 0.5\n\n'
        '[[tiers]]\nmodel = "fake:teacher"\nbase_url = "http://127.0.0.1:9/v1"\n')
    monkeypatch.chdir(tmp_path)
    return {"dir": tmp_path, "tools": f"{module}:TOOLS", "models": models, "options": options}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_tools_module_in_the_current_directory(own_agent):
    assert str(own_agent["dir"]) not in sys.path
    result = invoke("cascade", "run", "How many units of SKU-3?", "--tools", own_agent["tools"], "--json")
    assert result.exit_code == 0, result.output
    trajectory = json.loads(result.output)
    assert trajectory["steps"][0]["tool_results"][0]["content"] == "7"  # my_tools ran
    # base_url written on the tier reached the teacher's provider as an option.
    assert own_agent["options"]["teacher"] == {"base_url": "http://127.0.0.1:9/v1"}


def test_collect_finds_tools_in_the_current_directory(own_agent):
    result = invoke("collect", "-t", "fake:teacher", "-q", "tasks.jsonl", "--store", "s.db",
                    "--tools", own_agent["tools"], "--no-progress")
    assert result.exit_code == 0, result.output
    assert "correct by checker" in result.output and "4/4" in result.output


@pytest.mark.parametrize("spec, fragment", [
    ("not_here_at_all:TOOLS", "--tools 'not_here_at_all:TOOLS': cannot import not_here_at_all: no module named "
                              "'not_here_at_all' (looked in the current directory"),
    ("{module}:NOPE", "--tools '{module}:NOPE': module {module} has no attribute 'NOPE'"),
])
def test_missing_tools_module_or_attribute_is_one_line(own_agent, spec, fragment):
    module = own_agent["tools"].split(":")[0]
    result = CliRunner().invoke(app, ["collect", "-t", "fake:teacher", "-q", "tasks.jsonl",
                                      "--tools", spec.format(module=module)])
    message = str(result.exception)
    assert fragment.format(module=module) in message and "\n" not in message


def test_a_broken_tools_module_is_one_line(own_agent):
    (own_agent["dir"] / "broken_tools_mod.py").write_text("def oops(:\n")
    with pytest.raises(Exception) as error:
        invoke("cascade", "run", "q", "--tools", "broken_tools_mod:TOOLS")
    assert "cannot import broken_tools_mod: SyntaxError" in str(error.value) and "\n" not in str(error.value)


def system_prompts(model: ScriptedModel) -> set:
    return {next((m.content for m in call["messages"] if m.role == "system"), None) for call in model.calls}


def test_eval_with_system_prompt_and_student_row(own_agent):
    result = invoke("eval", "--tasks", "tasks.jsonl", "--tools", own_agent["tools"], "--n", "0", "--no-random-run",
                    "--system", "You are a stock clerk.", "--out", "eval.json")
    assert result.exit_code == 0, result.output
    assert system_prompts(own_agent["models"]["student"]) == {"You are a stock clerk."}
    assert system_prompts(own_agent["models"]["teacher"]) == {"You are a stock clerk."}
    results = json.loads((own_agent["dir"] / "eval.json").read_text())
    rows = results["rows"]
    assert rows[0]["name"].startswith("student alone") and rows[0]["teacher_call_fraction"] == 0.0
    assert rows[1]["name"].startswith("teacher alone") and rows[1]["teacher_call_fraction"] == 1.0
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(results_table(results))
    table = console.export_text().splitlines()
    header = next(line for line in table if "teacher share" in line)
    column = [cell.strip() for cell in header.split("┃")].index("teacher share")
    shares = {line.split("│")[1].strip()[:13]: line.split("│")[column].strip() for line in table if "alone" in line}
    assert shares == {"student alone": "0.0%", "teacher alone": "100.0%"}
    # The config was never calibrated: eval says so.
    assert "no [calibration] table" in result.output


def test_calibrate_with_system_prompt_task_system_wins(own_agent):
    tasks = own_agent["dir"] / "tasks.jsonl"
    lines = [json.loads(line) for line in tasks.read_text().splitlines()]
    lines[0]["system"] = "Task-specific prompt."
    tasks.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = invoke("calibrate", "--tasks", tasks, "--tools", own_agent["tools"], "--n", "0",
                    "--system", "You are a stock clerk.", "--out", "calibrated.toml")
    assert result.exit_code == 0, result.output
    assert system_prompts(own_agent["models"]["student"]) == {"You are a stock clerk.", "Task-specific prompt."}


@pytest.mark.parametrize("command", [["calibrate"], ["eval"], ["serve"], ["cascade"]])
def test_help_shows_the_toml_example_line_by_line(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    lines = [line.strip() for line in result.output.splitlines()]
    for expected in ('escalate = "step"', "[[tiers]]", 'model = "hf:runs/student"', "threshold = 0.6",
                     'base_url = "https://api.openai.com/v1"'):
        assert expected in lines, f"{command}: {expected!r} is not a line of --help"
    assert lines.count("[[tiers]]") == 2


# --- warnings before serving ---------------------------------------------------------------------


FAILED_CHECK = {"examples": 8, "valid_format": 0.0, "exact_calls": 0.0, "exact_answers": None, "ok": False,
                "warning": "the student reproduces 0/8 training examples (valid format 0%); check the chat template"}


@pytest.fixture()
def served(own_agent, monkeypatch):
    """A local student (hf:student, with a failed self-check) before a fake teacher; uvicorn does not start."""
    student = own_agent["dir"] / "student"
    student.mkdir()
    (student / "distillation.json").write_text(json.dumps({"self_check": FAILED_CHECK}))
    monkeypatch.setitem(_PROVIDERS, "hf", lambda name, **options: ScriptedModel(f"hf:{name}", make_script(set())))
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.append(kwargs))
    (own_agent["dir"] / "cascade.toml").write_text(
        '[[tiers]]\nmodel = "hf:student"\nthreshold = 0.5\n\n[[tiers]]\nmodel = "fake:teacher"\n')
    return started


def test_serve_warns_about_an_uncalibrated_config_and_a_failed_self_check(served):
    result = invoke("serve", "--cascade", "cascade.toml", "--no-capture")
    assert result.exit_code == 0, result.output
    assert served, "uvicorn.run was not reached"
    assert "warning: cascade.toml has no [calibration] table: its thresholds were never calibrated" in result.output
    assert ("warning: tiers[0].model hf:student failed its self-check (student/distillation.json): "
            + FAILED_CHECK["warning"]) in result.output


def test_serve_is_quiet_for_a_calibrated_config_with_a_passing_student(served, own_agent):
    (own_agent["dir"] / "student" / "distillation.json").write_text(
        json.dumps({"self_check": {**FAILED_CHECK, "ok": True, "warning": None}}))
    config = own_agent["dir"] / "cascade.toml"
    config.write_text(config.read_text() + "\n[calibration]\npredicted_task_escalation_rate = 0.2\n")
    result = invoke("serve", "--cascade", "cascade.toml", "--no-capture")
    assert result.exit_code == 0 and "warning" not in result.output


def test_cascade_check_warns_too(served):
    result = invoke("cascade", "check", "cascade.toml")
    assert result.exit_code == 0
    assert "failed its self-check" in result.output and FAILED_CHECK["warning"] in result.output
    assert "no [calibration] table" in result.output
