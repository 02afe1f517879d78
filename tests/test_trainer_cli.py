"""`distillery train` end to end on a tiny saved model and a JSONL file in the HF chat format."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.tiny_models import save_tiny_model, tiny_llama, tiny_tokenizer
from tests.trainer_helpers import chat_records


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "distillery.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_train_command_writes_a_model_and_reports_the_loss(tmp_path):
    tokenizer = tiny_tokenizer()
    student = save_tiny_model(tmp_path / "student", model=tiny_llama(tokenizer), tokenizer=tokenizer)
    teacher = save_tiny_model(tmp_path / "teacher", model=tiny_llama(tokenizer, seed=5), tokenizer=tokenizer)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in chat_records(4)))
    out = tmp_path / "out"
    result = run_cli(
        "train", "--student", student, "--data", data, "--teacher", teacher, "--signal", "online",
        "--alpha", "0.3", "--temperature", "1.5", "--max-steps", "2", "--batch-size", "2", "--logging-steps", "1",
        "--lr", "1e-3", "--out", out, "--self-check", "4",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loss_soft" in result.stdout and "signal=online" in result.stdout
    summary = json.loads((out / "distillation.json").read_text())
    assert summary["alpha"] == 0.3 and summary["global_step"] == 2
    # Two steps teach a random model nothing: the self-check says so, in the run record too.
    assert "self-check on 4 training turns" in result.stdout and "cannot reproduce its own training data" in result.stdout
    assert summary["self_check"]["ok"] is False and summary["self_check"]["examples"] == 4
    # Not world data: the closing hint points to a cascade, not to `world eval`.
    assert "cascade.toml" in result.stdout and "world eval" not in result.stdout
    assert (out / "config.json").exists() and (out / "tokenizer_config.json").exists()


def test_train_command_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from distillery.cli import app
    from distillery.errors import ConfigError

    runner = CliRunner()
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in chat_records(2)))
    # Values out of range are usage errors, refused when the command line is parsed (exit 2).
    for args, message in (
        (["--divergence", "kl"], "Invalid value for '--divergence': 'kl' is not one of"),
        (["--alpha", "1.5"], "Invalid value for '--alpha': must be in [0, 1], got 1.5"),
    ):
        result = runner.invoke(app, ["train", "--student", "hf:nowhere", "--data", str(data), "--out", str(tmp_path),
                                     *args])
        assert result.exit_code == 2 and message in result.output, result.output
    # A combination found once the student is loaded is a failed run: one line, exit 1.
    student = save_tiny_model(tmp_path / "student")
    result = runner.invoke(app, ["train", "--student", str(student), "--data", str(data),
                                 "--out", str(tmp_path / "o"), "--signal", "online"])
    assert isinstance(result.exception, ConfigError), result.output
    message = str(result.exception)
    assert "--signal online needs --teacher" in message and "\n" not in message
    help_text = runner.invoke(app, ["train", "--help"]).output
    assert "--temperature" in help_text and "mode-seeking" in help_text
