"""`evaluate_model` with concurrent tasks answers exactly as one task at a time."""

from distillery.models import load_model
from distillery.world.evaluate import evaluate_model
from distillery.world.tasks import generate_tasks


def test_concurrent_batched_evaluation_gives_the_sequential_trajectories_in_task_order():
    model = load_model("world:student-xs", max_new_tokens=24, seed=3)
    tasks = generate_tasks("validation", 12, seed=5)
    seen = []
    sequential, one_by_one = evaluate_model(model, tasks, max_steps=3)
    concurrent, together = evaluate_model(model, tasks, max_steps=3, concurrency=12,
                                          on_task=lambda task, trajectory: seen.append(task.id))
    assert [t.task_id for t in together] == [task.id for task in tasks]
    assert sorted(seen) == sorted(task.id for task in tasks)  # every task reported once, as it finishes
    assert [t.messages() for t in together] == [t.messages() for t in one_by_one]
    assert concurrent["success"] == sequential["success"] and concurrent["by_tier"] == sequential["by_tier"]
