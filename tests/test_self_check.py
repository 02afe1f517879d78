"""`run_self_check`: a trained model reproduces its training turns, an untrained one is flagged."""

from __future__ import annotations

from distillery.formats.hermes import to_hf_messages, to_hf_tools
from distillery.distill.self_check import run_self_check
from distillery.distill.trainer import chat_rows
from distillery.world.expert import solve
from distillery.world.models import load_world_model
from distillery.world.tasks import generate_tasks
from tests.tiny_models import tiny_llama


def world_rows(n: int) -> list[dict]:
    trajectories = [solve(task) for task in generate_tasks("train", n, seed=3)]
    return chat_rows([{"messages": to_hf_messages(t.messages()), "tools": to_hf_tools(t.tools)} for t in trajectories])


def test_the_trained_world_teacher_reproduces_expert_turns():
    teacher = load_world_model("teacher")
    check = run_self_check(teacher.model, teacher.tokenizer, world_rows(6), samples=8, seed=0)
    assert check.examples == 8
    assert check.ok and check.warning is None
    assert check.valid_format == 1.0
    assert check.exact_calls is not None and check.exact_calls >= 0.75
    assert "self-check on 8 training turns" in check.describe()


def test_an_untrained_student_is_flagged_with_its_garbage():
    teacher = load_world_model("teacher")
    untrained = tiny_llama(teacher.tokenizer, seed=0).train()
    check = run_self_check(untrained, teacher.tokenizer, world_rows(4), samples=6, seed=0)
    assert not check.ok
    assert check.exact_calls == 0.0
    assert "cannot reproduce its own training data" in check.warning
    assert check.failures and check.failures[0].startswith("example ")
    assert untrained.training  # the replay runs in eval mode and leaves the model as it found it
