"""`DistillationConfig` / `OnPolicyConfig`: each option declared once, reachable from the API and the CLI alike."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields

import pytest
import typer
from typer.testing import CliRunner

from distillery.cli import app
from distillery.commands.train import API_ONLY, config_from_options, flag
from distillery.distill.config import DistillationConfig, OnPolicyConfig
from distillery.errors import ConfigError
from tests.trainer_helpers import chat_records

OFFLINE_FIELDS = {spec.name for spec in fields(DistillationConfig)}


class Captured(Exception):
    """Raised by the fake trainers below with the config the command built."""

    def __init__(self, config):
        super().__init__("captured")
        self.config = config


@pytest.fixture
def train(tmp_path, monkeypatch):
    """`distillery train ARGS` with the trainers replaced: returns the config they were given."""
    import distillery.distill.on_policy as on_policy
    import distillery.distill.trainer as trainer

    def capture(*args, config, **kwargs):
        raise Captured(config)

    monkeypatch.setattr(trainer, "train_student", capture)
    monkeypatch.setattr(on_policy, "train_on_policy", capture)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in chat_records(2)))

    def run(*args: str):
        result = CliRunner().invoke(app, ["train", "--student", "hf:nowhere", "--data", str(data),
                                          "--out", str(tmp_path / "out"), *args])
        assert isinstance(result.exception, Captured), result.output
        return result.exception.config

    return run


def _other_value(spec) -> tuple[list[str], object]:
    """A valid value for the field other than its default: the command-line words and the value they mean."""
    if spec.type == "bool":
        return [], True  # a bare flag
    choices = spec.metadata.get("choices")
    if choices:
        value = next(c for c in choices if c != spec.default)
        return [value], value
    if "bounds" not in spec.metadata:  # a free string, such as a URL
        return ["http://127.0.0.1:8100"], "http://127.0.0.1:8100"
    low, high, _, _ = spec.metadata["bounds"]
    if spec.type.startswith("int"):
        value = (spec.default if spec.default is not None else low) + 1
    else:
        value = 0.25 if high == 1 else (spec.default or 1.0) * 1.5
    return [str(value)], value


@pytest.mark.parametrize("spec", [s for s in fields(OnPolicyConfig) if s.name not in API_ONLY and s.name != "signal"],
                         ids=lambda s: s.name)
def test_every_config_field_is_settable_from_the_command_line(train, spec):
    words, value = _other_value(spec)
    on_policy = [] if spec.name in OFFLINE_FIELDS else ["--signal", "on-policy"]
    if spec.name == "vllm_server_url":  # a server URL means nothing without the server mode
        on_policy += ["--generate-with", "vllm-server"]
    config = train(*on_policy, flag(spec.name), *words)
    assert getattr(config, spec.name) == value != spec.default


def test_the_signal_picks_the_config_and_each_keeps_its_own_defaults(train):
    config = train("--signal", "sparse")
    assert type(config) is DistillationConfig and config.signal == "sparse" and config.temperature == 2.0
    config = train("--signal", "on-policy")
    assert type(config) is OnPolicyConfig and config.temperature == 1.0 and config.beta == 1.0
    assert train("--signal", "on-policy", "--temperature", "0.7").temperature == 0.7
    # --resume without --save-steps keeps writing checkpoints, so the run can be resumed again.
    assert train("--resume").save_steps == 100


@pytest.mark.parametrize("args", [["--beta", "0.5"], ["--generate-with", "vllm-server"], ["--max-tool-turns", "3"],
                                  ["--tools", "my_agent:tools"], ["--replay-tools", "charge_card"]])
def test_an_on_policy_option_with_another_signal_is_refused_not_dropped(tmp_path, args):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in chat_records(2)))
    result = CliRunner().invoke(app, ["train", "--student", "hf:nowhere", "--data", str(data), "--out",
                                      str(tmp_path / "out"), "--signal", "sparse", *args], standalone_mode=False)
    error = result.exception
    assert isinstance(error, typer.BadParameter), result.output
    assert error.format_message() == (f"Invalid value for '{args[0]}': only for --signal on-policy "
                                      "(this run is --signal sparse)")


def test_vllm_generation_is_checked_before_any_model_loads(monkeypatch):
    import distillery.distill.on_policy as on_policy

    assert on_policy.student_generation_settings(OnPolicyConfig()) == {}
    monkeypatch.setattr(on_policy.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"^--generate-with vllm-colocate needs vLLM in this environment"):
        on_policy.student_generation_settings(OnPolicyConfig(generate_with="vllm-colocate"))
    monkeypatch.setattr(on_policy.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(on_policy.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^--generate-with vllm-server needs a CUDA GPU"):
        on_policy.student_generation_settings(OnPolicyConfig(generate_with="vllm-server"))
    # On a machine with both, the config becomes TRL's own settings for its vLLM modes.
    monkeypatch.setattr(on_policy.torch.cuda, "is_available", lambda: True)
    assert on_policy.student_generation_settings(OnPolicyConfig(generate_with="vllm-colocate")) == {
        "use_vllm": True, "vllm_mode": "colocate"}
    settings = on_policy.student_generation_settings(
        OnPolicyConfig(generate_with="vllm-server", vllm_server_url="http://10.0.0.5:8000"))
    assert settings == {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": "http://10.0.0.5:8000"}
    from trl import DistillationConfig as TRLDistillationConfig

    # TRL knows every name the settings use (a renamed TRL field would fail here, not on a GPU).
    trl_fields = {spec.name for spec in fields(TRLDistillationConfig)}
    assert set(settings) <= trl_fields


def test_a_server_url_needs_the_server_mode():
    with pytest.raises(ValueError, match=r"^vllm_server_url: only when generate_with is 'vllm-server'"):
        OnPolicyConfig(vllm_server_url="http://10.0.0.5:8000")


def test_api_only_fields_are_real_fields_without_a_flag():
    from distillery.commands.train import train as command

    assert set(API_ONLY) <= {spec.name for spec in fields(OnPolicyConfig)}
    assert not set(API_ONLY) & set(inspect.signature(command).parameters)


@pytest.mark.parametrize("args, values", [
    (["--alpha", "1.5"], {"alpha": 1.5}),
    (["--divergence", "kl"], {"divergence": "kl"}),
    (["--temperature", "0"], {"temperature": 0.0}),
    (["--max-steps", "0"], {"max_steps": 0}),
    (["--lr", "-1"], {"learning_rate": -1.0}),
    (["--grad-accum", "0"], {"gradient_accumulation_steps": 0}),
    (["--seed", "-1"], {"seed": -1}),
    (["--signal", "on-policy", "--beta", "2"], {"beta": 2.0}),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_a_bad_value_reads_the_same_from_the_api_and_the_cli(tmp_path, args, values):
    config_class = OnPolicyConfig if "on-policy" in args else DistillationConfig
    with pytest.raises(ValueError) as api:
        config_class(**values)
    name, problem = str(api.value).split(": ", 1)
    assert name in values and "\n" not in str(api.value)

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in chat_records(2)))
    # standalone_mode=False: the usage error itself, not click's (rich, terminal-width) rendering of it.
    result = CliRunner().invoke(app, ["train", "--student", "hf:nowhere", "--data", str(data), "--out",
                                      str(tmp_path / "out"), *args], standalone_mode=False)
    error = result.exception
    assert isinstance(error, typer.BadParameter) and error.exit_code == 2, result.output
    assert error.format_message() == f"Invalid value for '{flag(name)}': {problem}"

    # A value that gets past the parse-time checks (only the config knows a rule) reads the same way.
    with pytest.raises(typer.BadParameter) as cli:
        config_from_options({"signal": "on-policy" if config_class is OnPolicyConfig else "sequence", **values})
    assert cli.value.format_message() == f"Invalid value for '{flag(name)}': {problem}"


def test_the_trainer_arguments_check_the_loss_options_in_the_same_words(tmp_path):
    from distillery.distill.training_arguments import DistillationTrainingArguments

    with pytest.raises(ValueError, match=r"^alpha: must be in \[0, 1\], got 2$"):
        DistillationTrainingArguments(output_dir=str(tmp_path), alpha=2)
    with pytest.raises(ValueError, match=r"^sparse_tail: 'drop' is not one of bucket, renormalize$"):
        DistillationConfig(sparse_tail="drop")


def test_each_entry_point_takes_its_own_config():
    from distillery.distill.on_policy import train_on_policy
    from distillery.distill.trainer import train_student

    with pytest.raises(ValueError, match="signal: 'on-policy' trains with an OnPolicyConfig"):
        DistillationConfig(signal="on-policy")
    with pytest.raises(ConfigError, match="train_on_policy"):
        train_student("world:student-xs", [], out="unused", config=OnPolicyConfig())
    with pytest.raises(TypeError, match="OnPolicyConfig"):
        train_on_policy("world:student-xs", out="unused", teacher="world:teacher", config=DistillationConfig())
    with pytest.raises(TypeError, match="warmup_steps"):  # a TrainingArguments setting goes in training_arguments
        train_student("world:student-xs", [], out="unused", warmup_steps=10)
    # Keyword arguments named like fields override the config (and are checked like it).
    with pytest.raises(ValueError, match="^alpha: "):
        train_student("world:student-xs", [], out="unused", config=DistillationConfig(), alpha=3)


def test_the_command_line_reads_the_config_without_torch():
    """The options' help and checks come from distill/config.py, which the CLI imports for every command."""
    import subprocess
    import sys

    code = "import sys, distillery.cli; print(sorted({'torch', 'trl', 'transformers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
