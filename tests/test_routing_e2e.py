"""End to end on the offline world: a tiny local student (real HF logprobs) with a fallback.

The tiny student is untrained, so it escalates nearly everything: these tests check structure and
routing correctness (producers, confidences from real action tokens, costs, tags), not quality.
"""

import pytest

from distillery.models.hf import HFModel
from distillery.routing import StudentAgent, action_token_logprobs
from distillery.routing.confidence import NoActionLogprobs
from distillery.world import SYSTEM_PROMPT
from distillery.world.models import TEACHER_DIR
from distillery.world.tasks import generate_tasks
from distillery.world.tools import toolbox
from tests.routing_fakes import ScriptedModel
from tests.tiny_models import tiny_llama, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_student():
    tokenizer = tiny_tokenizer()
    return HFModel("tiny", model=tiny_llama(tokenizer), tokenizer=tokenizer, uri="world:student-xs", max_new_tokens=24)


def test_tiny_student_logprobs_score_and_escalate_to_fallback(tiny_student):
    tasks = generate_tasks("test", 2, seed=0)
    # A fallback that always answers with the task's expected value: the routing is what is tested.
    answers = {t.query: str(t.expected) for t in tasks}

    def oracle_answer(messages, call_index, n, temperature):
        from distillery.trajectory import Turn, Usage

        query = next(m.content for m in messages if m.role == "user")
        return [Turn(text=f"The answer is {answers[query]}.", usage=Usage(input_tokens=800, output_tokens=12))] * n

    fallback = ScriptedModel("world:teacher", oracle_answer)
    agent = StudentAgent(tiny_student, fallback, scorer="logprob-mean", threshold=0.5, tools=toolbox(),
                         system=SYSTEM_PROMPT, max_steps=3)
    for task in tasks:
        trajectory = agent.run(task)
        step = trajectory.steps[-1]
        assert step.producer == "world:teacher" and step.escalated
        first = step.routing.confidences[0]
        # A random 30k-parameter model is never sure: its confidence is well below 0.5 (or 0 when invalid).
        assert first.model == "world:student-xs" and 0.0 <= first.confidence < 0.5
        assert trajectory.cost_usd == pytest.approx(sum(c.cost_usd for s in trajectory.steps for c in s.routing.calls))
        assert trajectory.cost_usd > 0 and "escalated" in trajectory.tags


def test_real_hf_turn_action_tokens_are_a_subset_of_generated_tokens(tiny_student):
    task = generate_tasks("validation", 1, seed=1)[0]
    from distillery.trajectory import Message

    turn = tiny_student.generate([Message(role="system", content=SYSTEM_PROMPT), Message(role="user", content=task.query)],
                                 toolbox().specs, logprobs=True)[0]
    assert turn.logprobs
    try:
        selected = action_token_logprobs(turn)
    except NoActionLogprobs:
        return  # an empty answer has no action tokens; the scorer escalates it (confidence 0)
    assert 0 < len(selected) <= len(turn.logprobs)
    assert set(selected) <= {t.logprob for t in turn.logprobs}


@pytest.mark.skipif(not (TEACHER_DIR / "model.safetensors").is_file(), reason="bundled world teacher not trained yet")
def test_world_teacher_as_fallback(tiny_student):
    from distillery.models import load_model

    teacher = load_model("world:teacher")
    tasks = generate_tasks("test", 2, seed=0)
    agent = StudentAgent(tiny_student, teacher, scorer="logprob-mean", threshold=0.5, tools=toolbox(), system=SYSTEM_PROMPT)
    for task in tasks:
        trajectory = agent.run(task)
        assert trajectory.steps and all(s.producer in ("world:student-xs", "world:teacher") for s in trajectory.steps)
        assert any(s.producer == "world:teacher" for s in trajectory.steps)
        assert trajectory.metadata["routing"]["steps_by_tier"][1] >= 1
