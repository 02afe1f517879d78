"""Early escalation: a local proposal stops once a min-logprob scorer must reject it, with the same
routing decisions as full generation and fewer student tokens."""

from __future__ import annotations

import pytest

from distillery.models import load_model
from distillery.routing.cascade import Cascade
from distillery.routing.action_tokens import surely_rejected_by_min
from distillery.world import SYSTEM_PROMPT
from distillery.world.tasks import generate_tasks
from distillery.world.tools import toolbox

CALL = ['I will look.', '<tool_call>', '\n{"name": "', 'get_', 'stock', '", "arguments": {"sku": "A"}}', '\n</tool_call>']


@pytest.mark.parametrize("upto, low, expected", [
    (4, 3, False),  # the name is not closed yet: its tokens are not settled
    (6, 4, True),   # the name is closed and one of its tokens is below the threshold
    (6, 0, False),  # a doubtful token in the text before the call is not part of the action
    (5, 4, False),  # closing quote not written yet
    (7, 5, True),   # the arguments are complete and doubtful
])
def test_only_settled_action_tokens_decide(upto, low, expected):
    logprobs = [-0.01] * upto
    logprobs[low] = -3.0
    assert surely_rejected_by_min(CALL[:upto], logprobs, threshold=0.5) is expected


def run(early: bool, tasks):
    model = load_model("world:teacher")
    cascade = Cascade([model, model], [0.999], toolbox(), scorer="logprob-min", system=SYSTEM_PROMPT,
                      early_escalation=early)
    return [cascade.run(task) for task in tasks]


def test_decisions_are_those_of_full_generation_with_fewer_student_tokens():
    tasks = generate_tasks("validation", 8, seed=11)
    full, early = run(False, tasks), run(True, tasks)

    def decisions(trajectories):
        return [[(s.producer, s.escalated, s.text, [c.canonical() for c in s.tool_calls]) for s in t.steps]
                for t in trajectories]

    assert decisions(early) == decisions(full)
    assert [t.final_answer for t in early] == [t.final_answer for t in full]

    def student_tokens(trajectories):
        return sum(call.usage.output_tokens for t in trajectories for s in t.steps
                   for call in s.routing.calls if call.tier == 0)

    stopped = [c for t in early for s in t.steps for c in s.routing.confidences
               if c.tier == 0 and (c.invalid or "").startswith("stop_reason=early_reject")]
    assert stopped, "a 0.999 threshold must stop some proposals early"
    assert student_tokens(early) < student_tokens(full)
