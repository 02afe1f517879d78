"""`distillery train` on two CPU processes (DDP over gloo), launched as docs/training.md says.

Each signal is trained once by a real launcher (torchrun or `accelerate launch`) on 2 ranks with
2 examples per rank, and once in this process on 1 rank with 4 examples: the same global batch.
DDP averages the ranks' gradients and the trainer normalises by the token count of the whole
global batch, so both runs must take the same optimizer steps: the logged loss and gradient norm
and the written weights agree to float rounding. Every rank must exit 0, and only rank 0 writes
and prints (rank 1 used to crash reading the distillation.json only rank 0 writes).

A launch costs ~15-25 s on a busy 2-core machine (two processes import torch, transformers and
TRL), so the three launches take about a minute: marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_models import save_tiny_model, tiny_llama, tiny_tokenizer
from tests.trainer_helpers import chat_records

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent
STEPS, LR = 2, 1e-2


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    tokenizer = tiny_tokenizer()
    save_tiny_model(root / "student", model=tiny_llama(tokenizer), tokenizer=tokenizer)
    save_tiny_model(root / "teacher", model=tiny_llama(tokenizer, seed=5), tokenizer=tokenizer)
    (root / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in chat_records(8)))
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launcher(kind: str) -> list[str]:
    """The launch lines of docs/training.md ("Scaling out"), on a free port."""
    port = str(free_port())
    if kind == "torchrun-script":  # `--` ends torchrun's options: it would read --signal as its --signals-to-handle
        return [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", port, "--", str(BIN / "distillery")]
    if kind == "torchrun-module":
        return [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", port, "-m", "--", "distillery.cli"]
    if kind == "accelerate":  # --multi_gpu is accelerate's torchrun path; on CPUs it runs DDP over gloo
        return [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port, "-m", "distillery.cli"]
    raise ValueError(kind)


def run_launcher(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a launch in its own process group, so a hung rank cannot outlive the test."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    with subprocess.Popen(command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True) as process:
        try:
            out, err = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            pytest.fail(f"{command[0]} did not finish in 240 s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def logged(out: Path) -> list[dict]:
    return [e for e in json.loads((out / "distillation.json").read_text())["log_history"] if "loss" in e]


@pytest.mark.parametrize(
    "signal_name, kind",
    [("sequence", "torchrun-script"), ("online", "accelerate"), ("sparse", "torchrun-module")],
)
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(workdir, tmp_path, signal_name, kind):
    from safetensors.torch import load_file

    from distillery.distill.trainer import train_student

    teacher = ["--teacher", str(workdir / "teacher")] if signal_name != "sequence" else []
    out = tmp_path / "ddp"
    args = ["train", "--student", str(workdir / "student"), "--data", str(workdir / "train.jsonl"), *teacher,
            "--signal", signal_name, "--max-steps", str(STEPS), "--batch-size", "2", "--lr", str(LR),
            "--logging-steps", "1", "--self-check", "2", "--out", str(out)]
    result = run_launcher([*launcher(kind), *args], cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr and "FileNotFoundError" not in result.stderr, result.stderr[-4000:]
    # Rank 0 alone printed the summary and ran the self-check; rank 1 printed neither.
    assert result.stdout.count(f"signal={signal_name} ") == 1, result.stdout
    assert result.stdout.count("self-check on 2 training turns") == 1, result.stdout
    assert "[[tiers]]" in result.stdout  # the hint is printed literally, not eaten as rich markup
    summary = json.loads((out / "distillation.json").read_text())
    assert summary["global_step"] == STEPS and summary["signal"] == signal_name
    # 2 ranks x 2 examples x 2 steps = 4 of 8 examples per step: half an epoch per step.
    assert logged(out)[-1]["epoch"] == pytest.approx(1.0)
    if signal_name == "sparse":  # the sidecar was computed once, by rank 0, and read by both ranks
        assert (out / "teacher.topk.parquet").exists()

    # The same global batch (4) on one process, in this process.
    single = tmp_path / "single"
    train_student(str(workdir / "student"), workdir / "train.jsonl", out=single, signal=signal_name,
                  teacher=str(workdir / "teacher") if teacher else None, max_steps=STEPS, batch_size=4,
                  learning_rate=LR, logging_steps=1, self_check=0, progress=False)

    for ddp_entry, single_entry in zip(logged(out), logged(single), strict=True):
        assert ddp_entry["loss"] == pytest.approx(single_entry["loss"], rel=1e-4)
        # The gradient norm exposes a gradient off by the number of ranks, which Adam's update would hide.
        assert ddp_entry["grad_norm"] == pytest.approx(single_entry["grad_norm"], rel=1e-4)
    start = load_file(workdir / "student" / "model.safetensors")
    ddp_weights, single_weights = load_file(out / "model.safetensors"), load_file(single / "model.safetensors")
    assert ddp_weights.keys() == single_weights.keys()
    for name, weight in ddp_weights.items():
        moved = (single_weights[name] - start[name]).abs().max().item()
        differ = (weight - single_weights[name]).abs().max().item()
        assert moved > 1e-3 and differ < 1e-3 * moved + 1e-4, (name, moved, differ)


def test_accelerate_cpu_launcher_that_starts_one_process_is_refused():
    """`accelerate launch --cpu --num_processes 2` starts ONE process (its CPU launcher expects mpirun):
    that process sees MASTER_ADDR and no world size, and stops with a one-line error naming the fix."""
    from distillery.commands.train import _check_launch
    from distillery.errors import ConfigError

    simple = {"ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1",
              "MASTER_PORT": "29500"}
    with pytest.raises(ConfigError, match="--multi_gpu --num_processes N") as caught:
        _check_launch(simple)
    assert "\n" not in str(caught.value)
    _check_launch({**simple, "WORLD_SIZE": "2", "RANK": "1"})  # torchrun, or accelerate --multi_gpu
    _check_launch({**simple, "OMPI_COMM_WORLD_SIZE": "2"})  # accelerate --cpu --mpirun_hostfile
    _check_launch({"ACCELERATE_MIXED_PRECISION": "no"})  # accelerate launch with one process
    _check_launch({})  # no launcher


@pytest.mark.slow
def test_on_policy_under_two_cpu_processes(tmp_path):
    """`--signal on-policy` under torchrun: every rank rolls out its share, the ledger and tool counts are summed."""
    from distillery.distill.trainer import chat_rows
    from distillery.world.expert import solve
    from distillery.world.tasks import generate_tasks

    data = tmp_path / "train.jsonl"
    rows = chat_rows([solve(task) for task in generate_tasks("train", 8, seed=3)])
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "ddp"
    # The world teacher is the student (it calls tools); the untrained world student grades it.
    args = ["train", "--signal", "on-policy", "--student", "world:teacher", "--teacher", "world:student-xs",
            "--data", str(data), "--max-steps", "2", "--batch-size", "2", "--max-completion-length", "64",
            "--logging-steps", "1", "--self-check", "0", "--out", str(out)]
    result = run_launcher([*launcher("torchrun-module"), *args], cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("signal=on-policy ") == 1, result.stdout
    summary = json.loads((out / "distillation.json").read_text())
    assert summary["global_step"] == 2
    assert summary["compute"]["episodes"] == 2 * 2 * 2  # ranks x batch x steps
    assert summary["tools"]["calls"] == sum(summary["tools"]["calls_by_tool"].values()) > 0
    assert (out / "model.safetensors").is_file()
