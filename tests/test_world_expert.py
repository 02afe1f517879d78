"""The stochastic expert: deterministic per task, varied across samples in phrasing and plan, exact in facts."""

from __future__ import annotations

from collections import Counter

from distillery.formats.hermes import to_hf_messages, to_hf_tools
from distillery.chat_tokens import check_prefix_property, tokenize_rows
from distillery.world import expert
from distillery.world.expert import reference_plans, solve, solve_samples
from distillery.world.models import load_world_tokenizer
from distillery.world.tasks import FAMILIES, generate_tasks


def shape(trajectory):
    return [(step.text, [(c.name, c.arguments) for c in step.tool_calls]) for step in trajectory.steps]


def test_solve_is_deterministic_per_task_and_sample():
    for task in generate_tasks("train", 40, seed=5):
        assert shape(solve(task)) == shape(solve(task)) == shape(solve(task, sample=0))
        assert shape(solve(task, sample=3)) == shape(solve(task, sample=3))


def test_every_family_has_four_phrasings_for_each_reasoning_line_and_answer():
    for family in FAMILIES:
        assert len(expert.ANSWERS[family]) >= 4, family
        assert len(set(expert.ANSWERS[family])) == len(expert.ANSWERS[family])
    for (family, step), lines in expert.REASONING.items():
        assert family in FAMILIES and len(set(lines)) >= 4, (family, step)
    # Every tool step of every family is covered by a phrasing bank (the expert would raise otherwise).
    for family in FAMILIES:
        for task in generate_tasks("validation", 3, seed=1, families=[family]):
            for sample in range(6):
                assert solve(task, sample=sample).outcome.success


def test_samples_vary_phrasing_plans_and_silence_but_never_the_facts():
    task = generate_tasks("train", 1, seed=2, families=["stock_value"])[0]
    samples = solve_samples(task, 48)
    answers = {t.final_answer for t in samples}
    orders = {tuple(c.arguments.get("city") for c in t.tool_calls[1:3]) for t in samples}
    step_counts = Counter(len(t.steps) for t in samples)  # 4 steps + answer, or 3 with the two stocks in parallel
    silent = [all(not s.text for s in t.steps if s.tool_calls) for t in samples]
    assert len(answers) >= 4 and len(orders) == 2 and set(step_counts) == {4, 5}
    assert any(silent) and not all(silent)
    assert all(t.outcome.success for t in samples)
    assert len({c.arguments["expression"] for t in samples for c in t.tool_calls if c.name == "calculate"}) == 4
    assert len(reference_plans(task)) == 4  # 2 city orders x 2 operand orders; parallel or not, the same calls


def test_silent_and_reasoned_trajectories_over_many_tasks():
    tasks = [t for t in generate_tasks("train", 600, seed=3) if t.metadata["expert_calls"] > 0]
    silent = sum(all(not s.text for s in solve(t).steps if s.tool_calls) for t in tasks)
    assert 0.2 <= silent / len(tasks) <= 0.4
    firsts = Counter(solve(t).steps[0].text for t in tasks if t.metadata["family"] == "order_status")
    assert len([text for text in firsts if text]) >= 4 and firsts[""] > 0


def test_the_expert_passes_its_checker_on_thousands_of_tasks_and_samples():
    failures = []
    for split in ("train", "validation", "test"):
        for task in generate_tasks(split, 1000, seed=17):
            for sample in (0, 1):
                gold = solve(task, sample=sample)
                if not gold.outcome.success or len(gold.tool_calls) != task.metadata["expert_calls"]:
                    failures.append((task.query, gold.final_answer, gold.outcome.detail))
    assert not failures, failures[:5]


def test_parallel_and_silent_steps_train_on_their_inference_prompts():
    tokenizer = load_world_tokenizer()
    task = generate_tasks("train", 1, seed=2, families=["stock_value"])[0]
    trajectories = [t for t in solve_samples(task, 24) if len(t.steps) == 4][:2]  # parallel stock calls
    trajectories += [t for t in solve_samples(task, 24) if not t.steps[0].text][:2]  # calls with no text
    assert len(trajectories) == 4
    rows = [{"messages": to_hf_messages(t.messages()), "tools": to_hf_tools(t.tools)} for t in trajectories]
    check_prefix_property(tokenizer, rows, tokenize_rows(tokenizer, rows))
