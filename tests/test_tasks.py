import json

import pytest

from distillery.errors import ConfigError
from distillery.tasks import Task, load_tasks, normalize_text, numbers_in


def test_numeric_checker_reads_last_number_with_tolerance():
    task = Task(id="t", query="q", expected=42.5, checker="numeric", tolerance=0.01)
    assert task.check("The total is 1,000 units then 42.6 USD").success  # within 1%
    assert not task.check("The total is 43.5").success
    assert not task.check("no number here").success
    assert task.check(None).success is False


def test_string_checkers():
    assert Task(id="t", query="q", expected="Berlin", checker="normalized").check("  berlin. ").success
    assert not Task(id="t", query="q", expected="Berlin", checker="exact").check("berlin").success
    contains = Task(id="t", query="q", expected=["Café", "12"], checker="contains")
    assert contains.check("The cafe has 12 left").success
    assert not contains.check("The cafe has 13 left").success


def test_no_checker_means_no_outcome():
    assert Task(id="t", query="q").check("anything") is None


def test_normalize_and_numbers():
    assert normalize_text("Crème  Brûlée!") == "creme brulee"
    assert numbers_in("-3.5 and 1,200 and .5") == [-3.5, 1200.0, 0.5]
    # Identifiers hold no number: "60 units of SKU-2083" is 60, never -2083.
    assert numbers_in("60 units of SKU-2083 in ORD-12345") == [60.0]
    assert numbers_in("12-14 units") == [12.0, 14.0]


def test_numeric_checker_skips_identifiers():
    task = Task(id="t", query="q", expected=60, checker="numeric", tolerance=0.01)
    assert task.check("60 units of SKU-2083").success


def test_load_plain_text_skips_blank_and_comments(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("# header\nWhat is 2+2?\n\nHow far is Paris?\n")
    tasks = load_tasks(path)
    assert [t.query for t in tasks] == ["What is 2+2?", "How far is Paris?"]
    assert tasks[0].id != tasks[1].id


def test_load_jsonl_with_checker(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "a", "query": "2+2?", "expected": 4, "checker": "numeric", "tags": ["x"]}) + "\n")
    (task,) = load_tasks(path)
    assert task.id == "a" and task.checker == "numeric" and task.tags == ["x"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"query": "ok"}\n{"query": \n', r"q.jsonl:2: not valid JSON"),
        ('{"query": "ok"}\n{"id": "x"}\n', r"q.jsonl:2: missing or empty 'query'"),
        ('{"query": "ok", "checker": "vibes"}\n', r"q.jsonl:1: unknown checker 'vibes'"),
        ('{"id": "a", "query": "x"}\n{"id": "a", "query": "y"}\n', r"q.jsonl:2: duplicate task id 'a' \(first on line 1\)"),
        ('{"query": "ok", "tags": "notalist"}\n', r"q.jsonl:1: field 'tags'"),
        ('{"query": "ok"}\n{"query": "x", "tolerance": NaN}\n', r"q.jsonl:2: field 'tolerance': Input should be a finite number"),
        ('{"query": "x", "tolerance": Infinity}\n', r"q.jsonl:1: field 'tolerance': Input should be a finite number"),
        ('{"query": "x", "tolerance": -0.01}\n', r"q.jsonl:1: field 'tolerance': Input should be greater than or equal to 0"),
        ('{"query": "x", "tolerance": false}\n', r"q.jsonl:1: field 'tolerance': must be a number, not false"),
        ('{"query": "x", "checker": "numeric", "expected": "four"}\n', r"q.jsonl:1: field 'expected': the numeric checker needs a number"),
        ('{"query": "x", "checker": "numeric", "expected": [4]}\n', r"q.jsonl:1: field 'expected': the numeric checker needs a number"),
        ('{"query": "x", "checker": "numeric", "expected": -Infinity}\n', r"q.jsonl:1: field 'expected': .* finite number"),
        ('{"query": "x", "checker": "numeric", "expected": true}\n', r"q.jsonl:1: field 'expected'"),
        ("\n\n", r"no queries found"),
    ],
)
def test_malformed_task_files_name_the_line(tmp_path, content, message):
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_tasks(path)


def test_numbers_that_are_fine(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "a", "checker": "numeric", "expected": "4.5", "tolerance": 0}\n'
                    '{"query": "b", "checker": "numeric", "expected": -3, "tolerance": 2}\n'
                    '{"query": "c", "checker": "exact", "expected": "NaN"}\n')
    a, b, c = load_tasks(path)
    assert a.check("4.5").success and not a.check("4.51").success
    assert b.check("-1").success and c.check("NaN").success


def test_a_task_built_in_code_refuses_an_unusable_tolerance():
    for bad in (float("nan"), float("inf"), -1.0, True):
        with pytest.raises(ValueError, match="tolerance"):
            Task(id="t", query="q", tolerance=bad)
