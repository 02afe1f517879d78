"""Malformed inputs across the commands: no traceback, no silent acceptance, no damaged file.

Each case runs one command in a fresh copy of a workspace that already holds what a user has:
a trajectory store, a cascade.toml, a built dataset in out/, an export, task and training files.
Then:

- nothing raised (a traceback) and "Traceback" is not in the output;
- a usage error exits 2 with one `Error:` line, a failed run exits 1 with one `error:` line, and
  that line names the option, file, line or field given in the case; an input that really is fine
  exits 0 (no silent acceptance: nothing malformed exits 0);
- after a failure every file in the workspace is byte for byte what it was, and none was added.

The runs are in-process through `cli.run` (what `distillery` runs, without `sys.exit`), and none
of them loads a model or trains: a command gets as far as its inputs, never further. The HTTP
gateway's malformed requests are in tests/test_serve_validation.py.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.test_cli_usage_errors import assert_failed_run, assert_usage_error, invoke
from tests.test_dataset_support import varied_trajectories

USAGE, FAILED, OK = "usage", "failed", "ok"


@dataclass
class Case:
    id: str
    args: tuple[str, ...]
    expect: str
    names: tuple[str, ...] = ()  # must all be in the error line; "{ws}" is the workspace
    files: dict[str, str | bytes] = field(default_factory=dict)  # written into the workspace first


CASES: list[Case] = []


def case(expect: str, id: str, *args: str, names: tuple[str, ...] = (), files: dict | None = None) -> None:
    CASES.append(Case(id, args, expect, names, files or {}))


# -- inputs ----------------------------------------------------------------------------------------

TRAJECTORIES = [t.model_dump_json() for t in varied_trajectories(12)]


def jsonl(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def trajectories_with(line_6: str) -> str:
    """Twelve good trajectories with line 6 replaced."""
    return jsonl(TRAJECTORIES[:5] + [line_6] + TRAJECTORIES[6:])


def trajectory_changed(**changes) -> str:
    record = json.loads(TRAJECTORIES[5])
    record.update(changes)
    return json.dumps(record)


def trajectory_with_step_cost(cost) -> str:
    """Line 6's trajectory with its first step's cost_usd replaced (json.dumps writes NaN and Infinity)."""
    record = json.loads(TRAJECTORIES[5])
    record["steps"][0]["cost_usd"] = cost
    return json.dumps(record)


EXAMPLE = {"messages": [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello."}]}
EXAMPLES = [json.dumps(EXAMPLE)] * 10


def examples_with(change) -> str:
    """Ten good OpenAI fine-tuning examples with line 4 changed by `change(record)`."""
    record = copy.deepcopy(EXAMPLE)
    change(record)
    return jsonl(EXAMPLES[:3] + [json.dumps(record) if isinstance(record, dict) else record] + EXAMPLES[4:])


TIERS = ('[[tiers]]\nmodel = "openai:gpt-4o-mini"\nthreshold = 0.5\noptions = { base_url = "http://127.0.0.1:9/v1" }\n'
         '[[tiers]]\nmodel = "openai:gpt-4o"\noptions = { base_url = "http://127.0.0.1:9/v1" }\n')
TASKS = '{"id": "t1", "query": "What is 2+2?", "checker": "numeric", "expected": 4}\n'
LATIN1 = '{"query": "caf\xe9"}\n'.encode("latin-1")
BINARY = b'{"query": "x"}\n\x00\x01\x02\x03'

# -- command-line values ----------------------------------------------------------------------------

for args, names in [
    (("serve", "--port", "70000"), ("'--port'", "70000")),
    (("serve", "--port", "0"), ("'--port'",)),
    (("serve", "--port", "-1"), ("'--port'",)),
    (("serve", "--port", "99999999999999999999999"), ("'--port'",)),
    (("serve", "--port", "80.5"), ("'--port'",)),
    (("serve", "--request-timeout", "nan"), ("'--request-timeout'", "nan")),
    (("serve", "--request-timeout", "0"), ("'--request-timeout'",)),
    (("serve", "--drain-timeout", "-1"), ("'--drain-timeout'",)),
    (("serve", "--capture-queue", "0"), ("'--capture-queue'",)),
    (("serve", "--max-body-bytes", "-4"), ("'--max-body-bytes'",)),
    (("serve", "--log-level", "verbose"), ("'--log-level'", "verbose")),
    (("serve", "--map", "teacher"), ("'--map'", "NAME=cascade")),
    (("build", "--split", "nan,0.5,0.5"), ("'--split'",)),
    (("build", "--split", "0.5,0.6"), ("'--split'", "summing to 1")),
    (("build", "--split", "-0.5,1.5"), ("'--split'",)),
    (("build", "--split", "0.25,0.25,0.25,0.25"), ("'--split'",)),
    (("build", "--split", "inf,0,0"), ("'--split'",)),
    (("build", "--near-threshold", "1.5"), ("'--near-threshold'", "(0, 1]")),
    (("build", "--near-threshold", "0"), ("'--near-threshold'",)),
    (("build", "--near-threshold", "nan"), ("'--near-threshold'",)),
    (("build", "--max-tokens", "0"), ("'--max-tokens'",)),
    (("build", "--seed", "-1"), ("'--seed'",)),
    (("build", "--seed", "1099511627776"), ("'--seed'",)),
    (("build", "--since", "last tuesday"), ("'--since'", "ISO 8601")),
    (("build", "--format", "csv"), ("'--format'", "csv")),
    (("build", "--epochs", "0"), ("'--epochs'",)),
    (("calibrate", "--target", "0"), ("'--target'",)),
    (("calibrate", "--target", "nan"), ("'--target'",)),
    (("calibrate", "--budget", "-1"), ("'--budget'",)),
    (("calibrate", "--concurrency", "0"), ("'--concurrency'",)),
    (("calibrate", "--n", "-5"), ("'--n'",)),
    (("calibrate", "--n", "10000000000"), ("'--n'",)),
    (("calibrate", "--delta", "1"), ("'--delta'",)),
    (("eval", "--min-success", "1.5"), ("'--min-success'",)),
    (("eval", "--min-success", "nan"), ("'--min-success'",)),
    (("eval", "--max-cost", "-0.01"), ("'--max-cost'",)),
    (("eval", "--min-pgr", "inf"), ("'--min-pgr'",)),
    (("world", "generate", "--n", "0"), ("'--n'",)),
    (("world", "generate", "--n", "1e6"), ("'--n'",)),
    (("world", "generate", "--split", "dev"), ("'--split'", "dev")),
    (("world", "eval", "--max-steps", "0"), ("'--max-steps'",)),
    (("world", "train-teacher", "--lr", "nan"), ("'--lr'",)),
    (("world", "train-teacher", "--batch-size", "0"), ("'--batch-size'",)),
    (("world", "train-teacher", "--device", "tpu"), ("'--device'", "tpu")),
    (("train", "--alpha", "1.5"), ("'--alpha'",)),
    (("train", "--temperature", "0"), ("'--temperature'",)),
    (("train", "--lr", "-1e-3"), ("'--lr'",)),
    (("train", "--grad-accum", "0"), ("'--grad-accum'",)),
    (("train", "--signal", "telepathy"), ("'--signal'", "telepathy")),
    (("demo", "--alpha", "-0.1"), ("'--alpha'",)),
    (("demo", "--target", "1.5"), ("'--target'",)),
    (("demo", "--budget-usd", "-5"), ("'--budget-usd'",)),
    (("demo", "--n-train", "0"), ("'--n-train'",)),
    (("demo", "--escalate", "never"), ("'--escalate'", "never")),
    (("demo", "--student-layers", "0"), ("'--student-layers'",)),
    (("demo", "--student-hidden", "-8"), ("'--student-hidden'",)),
    (("finetune", "--epochs", "0"), ("'--epochs'",)),
    (("finetune", "--lr-multiplier", "0"), ("'--lr-multiplier'",)),
    (("finetune", "--seed", "2147483648"), ("'--seed'",)),
    (("finetune", "--hosted", "gemini:pro"), ("'--hosted'", "gemini:pro")),
    (("finetune", "--poll-interval", "-1"), ("'--poll-interval'",)),
    (("cascade", "train", "--max-steps", "0"), ("'--max-steps'",)),
    (("collect", "--concurrency", "0"), ("--concurrency",)),
    (("collect", "--budget", "-1"), ("--budget",)),
    (("collect", "--n", "abc"), ("--n",)),
    (("store", "export", "x.jsonl", "--limit", "-1"), ("--limit",)),
]:
    case(USAGE, " ".join(args), *args, names=names)

case(USAGE, "collect without --teacher", "collect", "--queries", "{ws}/tasks.jsonl", names=("--teacher",))
case(USAGE, "collect with an unknown flag", "collect", "--teacher", "world:teacher", "--fast", names=("--fast",))

# -- build --from-jsonl: trajectories ---------------------------------------------------------------

FROM_JSONL = ("build", "--from-jsonl", "{ws}/in.jsonl", "--out", "{ws}/out")
for id, text, names in [
    ("a line that is not JSON", trajectories_with("{oops"), ("{ws}/in.jsonl:6", "not valid JSON")),
    ("a JSON array", trajectories_with("[1, 2]"), ("{ws}/in.jsonl:6", "list")),
    ("an empty object", trajectories_with("{}"), ("{ws}/in.jsonl:6", "task_id")),
    ("steps as a string", trajectories_with(trajectory_changed(steps="x")), ("{ws}/in.jsonl:6", "steps")),
    ("steps holding a number", trajectories_with(trajectory_changed(steps=[5])), ("{ws}/in.jsonl:6", "steps")),
    ("an unknown status", trajectories_with(trajectory_changed(status="great")), ("{ws}/in.jsonl:6", "status")),
    ("a date that is not one", trajectories_with(trajectory_changed(created_at="yesterday")), ("{ws}/in.jsonl:6", "created_at")),
    ("a sample index as text", trajectories_with(trajectory_changed(sample_index="first")), ("{ws}/in.jsonl:6", "sample_index")),
    ("a truncated last line", jsonl(TRAJECTORIES[:11] + [TRAJECTORIES[11][:60]]), ("{ws}/in.jsonl:12",)),
    ("a NaN step cost", trajectories_with(trajectory_with_step_cost(float("nan"))), ("{ws}/in.jsonl:6", "steps.0.cost_usd", "finite")),
    ("an infinite step cost", trajectories_with(trajectory_with_step_cost(float("inf"))), ("{ws}/in.jsonl:6", "steps.0.cost_usd")),
    ("a negative step cost", trajectories_with(trajectory_with_step_cost(-0.01)), ("{ws}/in.jsonl:6", "steps.0.cost_usd")),
    ("a step cost that is text", trajectories_with(trajectory_with_step_cost("free")), ("{ws}/in.jsonl:6", "steps.0.cost_usd")),
    ("a byte-order mark", "\ufeff" + jsonl(TRAJECTORIES), ("{ws}/in.jsonl:1", "BOM")),
]:
    case(FAILED, f"build: {id}", *FROM_JSONL, names=names, files={"in.jsonl": text})
for id, content, names in [
    ("not UTF-8", LATIN1, ("'--from-jsonl'", "not UTF-8")),
    ("binary", BINARY, ("'--from-jsonl'", "binary")),
    ("empty", b"", ("'--from-jsonl'", "is empty")),
    ("only blank lines", b"\n  \n\n", ("'--from-jsonl'", "is empty")),
]:
    case(USAGE, f"build: an input that is {id}", *FROM_JSONL, names=(*names, "{ws}/in.jsonl"), files={"in.jsonl": content})
case(USAGE, "build: the input is a directory", "build", "--from-jsonl", "{ws}/a-dir", "--out", "{ws}/out",
     names=("'--from-jsonl'", "is a directory"))
case(USAGE, "build: the input is missing", "build", "--from-jsonl", "{ws}/nope.jsonl", "--out", "{ws}/out",
     names=("'--from-jsonl'", "no such file"))
case(USAGE, "build: --out is a file", "build", "--from-jsonl", "{ws}/trajectories.jsonl", "--out", "{ws}/notes.txt",
     names=("'--out'", "is a file"))
case(USAGE, "build: --out under a file", "build", "--from-jsonl", "{ws}/trajectories.jsonl", "--out", "{ws}/notes.txt/d",
     names=("'--out'", "is a file"))
case(USAGE, "build: --decontaminate is a directory", *FROM_JSONL, "--decontaminate", "{ws}/a-dir",
     names=("'--decontaminate'",), files={"in.jsonl": jsonl(TRAJECTORIES)})
case(USAGE, "build: --tokenizer is a file", *FROM_JSONL, "--tokenizer", "{ws}/notes.txt", names=("'--tokenizer'",),
     files={"in.jsonl": jsonl(TRAJECTORIES)})
case(USAGE, "build: --sidecar topk without --tokenizer", *FROM_JSONL, "--sidecar", "topk", names=("--tokenizer",),
     files={"in.jsonl": jsonl(TRAJECTORIES)})
# What is fine must build: CRLF line ends, blank lines, a repeated line (removed as a duplicate, and counted).
case(OK, "build: CRLF and blank lines are fine", *FROM_JSONL,
     files={"in.jsonl": "\r\n".join(TRAJECTORIES[:6] + ["", "  "] + TRAJECTORIES[6:]) + "\r\n"})
case(OK, "build: a repeated trajectory is deduplicated", *FROM_JSONL, files={"in.jsonl": jsonl(TRAJECTORIES + TRAJECTORIES[:1])})

# -- build --from-store ------------------------------------------------------------------------------

FROM_STORE = ("build", "--from-store", "{ws}/in.db", "--out", "{ws}/out")
for id, content, names in [
    ("a text file", b"not a database\n", ("'--from-store'", "not an SQLite")),
    ("an empty file", b"", ("'--from-store'", "empty file")),
    ("a JSONL export", jsonl(TRAJECTORIES).encode(), ("'--from-store'", "not an SQLite")),
]:
    case(USAGE, f"build: a store that is {id}", *FROM_STORE, names=names, files={"in.db": content})
case(USAGE, "build: the store is a directory", "build", "--from-store", "{ws}/a-dir", "--out", "{ws}/out",
     names=("'--from-store'", "is a directory"))
case(USAGE, "build: the store is missing", "build", "--from-store", "{ws}/nope.db", "--out", "{ws}/out",
     names=("'--from-store'", "no such store"))
case(FAILED, "build: an SQLite file that is not a store", *FROM_STORE, names=("{ws}/in.db", "no such table"),
     files={"in.db": "@other-sqlite"})
case(FAILED, "build: a truncated store", *FROM_STORE, names=("{ws}/in.db", "malformed"), files={"in.db": "@truncated-store"})
# A row whose record does not parse stops the build, naming the store, the row and the trajectory id;
# --skip-invalid leaves it out (the store is opened read-only either way).
case(FAILED, "build: a store row that is not JSON", *FROM_STORE, names=("{ws}/in.db", "row 3", "traj-2", "--skip-invalid"),
     files={"in.db": "@corrupt-row"})
case(FAILED, "build: a store row that is a JSON list", *FROM_STORE, names=("{ws}/in.db", "row 3", "traj-2"),
     files={"in.db": "@list-row"})
case(OK, "build: a store row that is not JSON, with --skip-invalid", *FROM_STORE, "--skip-invalid",
     files={"in.db": "@corrupt-row"})
case(FAILED, "build: a store with no matching rows", "build", "--from-store", "{ws}/store.db", "--out", "{ws}/out",
     "--model", "nobody:none", names=("{ws}/store.db", "empty selection"))
case(OK, "build: the store", "build", "--from-store", "{ws}/store.db", "--out", "{ws}/out")

# -- build validate: OpenAI fine-tuning files ------------------------------------------------------

VALIDATE = ("build", "validate", "{ws}/train-bad.jsonl")
for id, text, names in [
    ("a line that is not JSON", jsonl(EXAMPLES[:3] + ["{oops"] + EXAMPLES[4:]), ()),
    ("a JSON array", jsonl(EXAMPLES[:3] + ["[1]"] + EXAMPLES[4:]), ()),
    ("no messages", jsonl(EXAMPLES[:3] + ['{"x": 1}'] + EXAMPLES[4:]), ()),
    ("an unknown role", examples_with(lambda r: r["messages"][1].update(role="human")), ()),
    ("content that is a number", examples_with(lambda r: r["messages"][2].update(content=5)), ()),
    ("no assistant message", examples_with(lambda r: r["messages"].pop()), ()),
    ("a weight of 2", examples_with(lambda r: r["messages"][2].update(weight=2)), ()),
    ("a dotted function name", examples_with(lambda r: r["messages"][2].update(content=None, tool_calls=[
        {"id": "c1", "type": "function", "function": {"name": "math.factorial", "arguments": "{}"}}])), ()),
    ("an example over the token limit", examples_with(lambda r: r["messages"][2].update(content="x" * 400_000)), ()),
    ("nothing but blank lines", "\n\n", ()),
]:
    case(FAILED, f"validate: {id}", *VALIDATE, names=("{ws}/train-bad.jsonl", "would be rejected", *names),
         files={"train-bad.jsonl": text})
case(OK, "validate: ten good examples", "build", "validate", "{ws}/train.jsonl")
for id, content, names in [("not UTF-8", LATIN1, ("not UTF-8",)), ("binary", BINARY, ("binary",))]:
    case(USAGE, f"validate: a file that is {id}", *VALIDATE, names=("{ws}/train-bad.jsonl", *names),
         files={"train-bad.jsonl": content})
case(USAGE, "validate: a directory", "build", "validate", "{ws}/a-dir", names=("FILE", "is a directory"))
case(USAGE, "validate: --token-limit 0", "build", "validate", "{ws}/train.jsonl", "--token-limit", "0",
     names=("'--token-limit'",))

# -- finetune --dry-run (validates and estimates, uploads nothing) ----------------------------------

DRY_RUN = ("finetune", "--dry-run", "--data", "{ws}/train-bad.jsonl")
for id, text, names in [
    ("a line that is not JSON", jsonl(EXAMPLES[:3] + ["{oops"] + EXAMPLES[4:]), ("{ws}/train-bad.jsonl:4", "not valid JSON")),
    ("an unknown role", examples_with(lambda r: r["messages"][1].update(role="human")), ("{ws}/train-bad.jsonl:4", "role")),
    ("too few examples", jsonl(EXAMPLES[:3]), ("{ws}/train-bad.jsonl", "at least 10")),
]:
    case(FAILED, f"finetune: {id}", *DRY_RUN, names=names, files={"train-bad.jsonl": text})
case(FAILED, "finetune: a bad validation file", "finetune", "--dry-run", "--data", "{ws}/train.jsonl", "--validation",
     "{ws}/val.jsonl", names=("{ws}/val.jsonl:1", "not valid JSON"), files={"val.jsonl": "{oops\n"})
case(USAGE, "finetune: data that is not UTF-8", *DRY_RUN, names=("'--data'", "not UTF-8"), files={"train-bad.jsonl": LATIN1})
case(USAGE, "finetune: data that is a directory", "finetune", "--dry-run", "--data", "{ws}/a-dir", names=("'--data'",))
case(USAGE, "finetune: --data with --cancel", "finetune", "--data", "{ws}/train.jsonl", "--cancel", "ftjob-1",
     names=("exactly one of",))
case(OK, "finetune: a dry run of good data", "finetune", "--dry-run", "--data", "{ws}/train.jsonl")

# -- cascade.toml, through cascade check, serve, calibrate and eval --------------------------------

TOML_ERRORS = [
    ("invalid TOML", "[[tiers]\nmodel = 1\n", ("invalid TOML",)),
    ("an empty file", "", ("no [[tiers]]",)),
    ("tiers that are a string", 'tiers = "x"\n', ("no [[tiers]]",)),
    ("a tier without a model", TIERS.replace('model = "openai:gpt-4o-mini"\n', ""), ("tiers[0].model",)),
    ("a model that is a number", TIERS.replace('"openai:gpt-4o-mini"', "5"), ("tiers[0].model",)),
    ("an unknown provider", TIERS.replace("openai:gpt-4o-mini", "gemini:pro"), ("tiers[0].model", "gemini:pro")),
    ("a threshold that is text", TIERS.replace("0.5", '"high"'), ("tiers[0].threshold",)),
    ("a NaN threshold", TIERS.replace("0.5", "nan"), ("tiers[0].threshold",)),
    ("an infinite threshold", TIERS.replace("0.5", "inf"), ("tiers[0].threshold",)),
    ("a threshold of 1e400", TIERS.replace("0.5", "1e400"), ("tiers[0].threshold",)),
    ("a negative threshold", TIERS.replace("0.5", "-0.5"), ("tiers[0].threshold",)),
    ("a threshold that is a boolean", TIERS.replace("0.5", "true"), ("tiers[0].threshold",)),
    ("a missing threshold", TIERS.replace("threshold = 0.5\n", ""), ("tiers[0].threshold",)),
    ("a threshold on the last tier", TIERS + "threshold = 0.3\n", ("tiers[1].threshold",)),
    ("an unknown key", "colour = 1\n" + TIERS, ("colour",)),
    ("an unknown tier key", TIERS.replace("threshold = 0.5", "threshold = 0.5\ncolour = 1"), ("tiers[0]", "colour")),
    ("an unknown escalation", 'escalate = "sideways"\n' + TIERS, ("escalate",)),
    ("an unknown scorer", TIERS.replace("threshold = 0.5", 'threshold = 0.5\nscorer = "vibes"'), ("tiers[0].scorer",)),
    ("a negative timeout", TIERS.replace("threshold = 0.5", "threshold = 0.5\ntimeout_s = -1"), ("tiers[0].timeout_s",)),
    ("an unknown fallback policy", 'on_fallback_error = "explode"\n' + TIERS, ("on_fallback_error",)),
    ("options that are a string", TIERS.replace("options = {", 'options = "x"\nx = {', 1), ("tiers[0]",)),
    ("a calibration that is a string", 'calibration = "x"\n' + TIERS, ("calibration",)),
    ("a byte-order mark", "\ufeff" + TIERS, ("invalid TOML",)),
]
for id, text, names in TOML_ERRORS:
    case(FAILED, f"cascade check: {id}", "cascade", "check", "{ws}/bad.toml", names=("{ws}/bad.toml", *names),
         files={"bad.toml": text})
for id, text, names in [
    ("a NaN tier timeout", TIERS.replace("threshold = 0.5", "threshold = 0.5\ntimeout_s = nan"), ("tiers[0].timeout_s",)),
    ("an infinite tier timeout", TIERS.replace("threshold = 0.5", "threshold = 0.5\ntimeout_s = inf"), ("tiers[0].timeout_s",)),
    ("a NaN fallback timeout", "fallback_timeout_s = nan\n" + TIERS, ("fallback_timeout_s",)),
    ("a negative fallback timeout", "fallback_timeout_s = -5\n" + TIERS, ("fallback_timeout_s",)),
    ("an infinite fallback timeout", "fallback_timeout_s = inf\n" + TIERS, ("fallback_timeout_s",)),
    ("a base_url that is a number", TIERS.replace('"http://127.0.0.1:9/v1" }', "5 }", 1), ("tiers[0].base_url",)),
    ("a base_url without a scheme", TIERS.replace('"http://127.0.0.1:9/v1" }', '"localhost:8000/v1" }', 1),
     ("tiers[0].base_url", "http")),
    ("a base_url that is not http", TIERS.replace('"http://127.0.0.1:9/v1" }', '"ftp://127.0.0.1/v1" }', 1),
     ("tiers[0].base_url",)),
    ("a base_url with a bad port", TIERS.replace("127.0.0.1:9/v1", "127.0.0.1:99999/v1", 1), ("tiers[0].base_url", "port")),
    ("a base_url shorthand that is a table", TIERS.replace('options = { base_url = "http://127.0.0.1:9/v1" }\n', "base_url = { x = 1 }\n", 1),
     ("tiers[0].base_url",)),
    ("a last-tier base_url that is empty", '"" }'.join(TIERS.rsplit('"http://127.0.0.1:9/v1" }', 1)), ("tiers[1].base_url",)),
]:
    case(FAILED, f"cascade check: {id}", "cascade", "check", "{ws}/bad.toml", names=("{ws}/bad.toml", *names),
         files={"bad.toml": text})
for id, content, names in [("not UTF-8", LATIN1, ("not UTF-8",)), ("binary", BINARY, ("binary",))]:
    case(USAGE, f"cascade check: a config that is {id}", "cascade", "check", "{ws}/bad.toml",
         names=("CONFIG", "{ws}/bad.toml", *names), files={"bad.toml": content})
case(USAGE, "cascade check: a directory", "cascade", "check", "{ws}/a-dir", names=("CONFIG", "is a directory"))
case(USAGE, "cascade check: no cascade.toml here", "cascade", "check", names=("CONFIG", "cascade.toml", "no such file"),
     files={"cascade.toml": None})
case(OK, "cascade check: the config", "cascade", "check", "{ws}/cascade.toml")
case(OK, "cascade check: a teacher alone", "cascade", "check", "{ws}/one.toml",
     files={"one.toml": '[[tiers]]\nmodel = "openai:gpt-4o"\n'})
for command in (("serve", "--cascade"), ("calibrate", "--config"), ("eval", "--config"), ("cascade", "train", "--config")):
    case(FAILED, f"{command[0]}: invalid TOML", *command, "{ws}/bad.toml", names=("{ws}/bad.toml", "invalid TOML"),
         files={"bad.toml": "[[tiers]\n"})
    case(USAGE, f"{command[0]}: a config that is not UTF-8", *command, "{ws}/bad.toml",
         names=(f"'{command[-1]}'", "not UTF-8"), files={"bad.toml": LATIN1})
case(USAGE, "serve: a store that is not a store", "serve", "--cascade", "{ws}/cascade.toml", "--store", "{ws}/notes.txt",
     names=("'--store'", "not an SQLite"))
case(USAGE, "calibrate: --out is a directory", "calibrate", "--config", "{ws}/cascade.toml", "--out", "{ws}/a-dir",
     names=("'--out'", "is a directory"))

# -- task files: calibrate, eval, cascade train, world eval, collect --------------------------------

TASK_ERRORS = [
    ("a line that is not JSON", TASKS + "{oops\n", ("{ws}/bad-tasks.jsonl:2", "not valid JSON")),
    ("no query", TASKS + '{"expected": 1}\n', ("{ws}/bad-tasks.jsonl:2", "query")),
    ("a query that is a number", '{"query": 5}\n', ("{ws}/bad-tasks.jsonl:1", "query")),
    ("an unknown checker", '{"query": "a", "checker": "vibes"}\n', ("{ws}/bad-tasks.jsonl:1", "vibes")),
    ("a duplicate id", '{"id": "x", "query": "a"}\n{"id": "x", "query": "b"}\n', ("{ws}/bad-tasks.jsonl:2", "duplicate")),
    ("a JSON array", "[1]\n", ("{ws}/bad-tasks.jsonl:1",)),
    ("an id that is a number", '{"id": 5, "query": "a"}\n', ("{ws}/bad-tasks.jsonl:1", "id")),
    ("tags that are a string", '{"query": "a", "tags": "x"}\n', ("{ws}/bad-tasks.jsonl:1", "tags")),
    ("only comments", "# nothing yet\n\n", ("{ws}/bad-tasks.jsonl", "no queries")),
    ("a NaN tolerance", TASKS + '{"query": "a", "checker": "numeric", "expected": 1, "tolerance": NaN}\n',
     ("{ws}/bad-tasks.jsonl:2", "tolerance")),
    ("a negative tolerance", '{"query": "a", "tolerance": -0.1}\n', ("{ws}/bad-tasks.jsonl:1", "tolerance")),
    ("an infinite tolerance", '{"query": "a", "tolerance": 1e400}\n', ("{ws}/bad-tasks.jsonl:1", "tolerance")),
    ("a tolerance that is a boolean", '{"query": "a", "tolerance": true}\n', ("{ws}/bad-tasks.jsonl:1", "tolerance")),
    ("a numeric answer that is text", '{"query": "a", "checker": "numeric", "expected": "four"}\n',
     ("{ws}/bad-tasks.jsonl:1", "expected")),
    ("a numeric answer that is NaN", '{"query": "a", "checker": "numeric", "expected": NaN}\n',
     ("{ws}/bad-tasks.jsonl:1", "expected")),
    ("a numeric task without an answer", '{"query": "a", "checker": "numeric"}\n', ("{ws}/bad-tasks.jsonl:1", "expected")),
]
TASK_COMMANDS = {
    "world eval": ("world", "eval", "--model", "openai:gpt-4o", "--tasks"),
    "calibrate": ("calibrate", "--config", "{ws}/cascade.toml", "--tasks"),
    "eval": ("eval", "--config", "{ws}/cascade.toml", "--tasks"),
    "cascade train": ("cascade", "train", "--config", "{ws}/cascade.toml", "--out", "{ws}/trained", "--tasks"),
    "collect": ("collect", "--teacher", "openai:gpt-4o", "--store", "{ws}/store.db", "--no-progress", "--queries"),
}
for id, text, names in TASK_ERRORS:
    for command in ("world eval", "calibrate") if id != "a line that is not JSON" else TASK_COMMANDS:
        case(FAILED, f"{command}: tasks with {id}", *TASK_COMMANDS[command], "{ws}/bad-tasks.jsonl", names=names,
             files={"bad-tasks.jsonl": text})
for command, args in TASK_COMMANDS.items():
    option = "'--queries'" if command == "collect" else "'--tasks'"
    case(USAGE, f"{command}: tasks that are a directory", *args, "{ws}/a-dir", names=(option, "is a directory"))
    case(USAGE, f"{command}: tasks that are binary", *args, "{ws}/bad-tasks.jsonl", names=(option, "binary"),
         files={"bad-tasks.jsonl": BINARY})
    case(USAGE, f"{command}: tasks that are not UTF-8", *args, "{ws}/bad-tasks.jsonl", names=(option, "not UTF-8"),
         files={"bad-tasks.jsonl": LATIN1})

# -- eval --from-json ---------------------------------------------------------------------------------

for id, text, names in [
    ("not JSON", "{", ("{ws}/results.json:1", "not valid JSON")),
    ("empty", "", ("{ws}/results.json",)),
    ("an object of something else", '{"rows": []}', ("{ws}/results.json", "not a distillery eval results file")),
]:
    case(FAILED, f"eval --from-json: {id}", "eval", "--from-json", "{ws}/results.json", names=names,
         files={"results.json": text})
for id, text in [("a JSON list", "[]"), ("a JSON number", "5"), ("JSON null", "null")]:
    case(FAILED, f"eval --from-json: {id}", "eval", "--from-json", "{ws}/results.json",
         names=("{ws}/results.json", "not a distillery eval results file"), files={"results.json": text})
case(USAGE, "eval --from-json: a directory", "eval", "--from-json", "{ws}/a-dir", names=("'--from-json'",))

# -- stores: store stats / export, collect --store --------------------------------------------------

for command in (("store", "stats"), ("store", "export", "{ws}/export.jsonl")):
    name = " ".join(command[:2])
    case(USAGE, f"{name}: a text file", *command, "--store", "{ws}/notes.txt",
         names=("'--store'", "{ws}/notes.txt", "not an SQLite"))
    case(FAILED, f"{name}: a truncated store", *command, "--store", "{ws}/in.db", names=("{ws}/in.db", "malformed"),
         files={"in.db": "@truncated-store"})
    case(USAGE, f"{name}: a missing store", *command, "--store", "{ws}/nope.db", names=("'--store'", "{ws}/nope.db", "no such store"))
    case(USAGE, f"{name}: a directory", *command, "--store", "{ws}/a-dir", names=("'--store'", "{ws}/a-dir", "is a directory"))
case(OK, "store stats: a row that is not JSON (stats reads the columns)", "store", "stats", "--store", "{ws}/in.db",
     files={"in.db": "@corrupt-row"})
for kind in ("@corrupt-row", "@list-row"):
    case(FAILED, f"store export: a row that is {'not JSON' if kind == '@corrupt-row' else 'a JSON list'}", "store",
         "export", "{ws}/export.jsonl", "--store", "{ws}/in.db", names=("{ws}/in.db", "row 3", "traj-2"),
         files={"in.db": kind})
case(USAGE, "store export: OUT is a directory", "store", "export", "{ws}/a-dir", "--store", "{ws}/store.db",
     names=("OUT.jsonl", "{ws}/a-dir", "is a directory"))
case(USAGE, "store export: OUT under a file", "store", "export", "{ws}/notes.txt/x.jsonl", "--store", "{ws}/store.db",
     names=("OUT.jsonl", "{ws}/notes.txt", "is a file"))
COLLECT = ("collect", "--teacher", "openai:gpt-4o", "--queries", "{ws}/tasks.jsonl")
case(USAGE, "collect: a store that is a text file", *COLLECT, "--store", "{ws}/notes.txt",
     names=("'--store'", "{ws}/notes.txt", "not an SQLite"))
case(USAGE, "collect: a store that is a directory", *COLLECT, "--store", "{ws}/a-dir", names=("'--store'", "is a directory"))
case(USAGE, "collect: --tool-schemas that are binary", *COLLECT, "--tool-schemas", "{ws}/bad.json",
     names=("'--tool-schemas'", "{ws}/bad.json", "binary"), files={"bad.json": BINARY})
case(USAGE, "collect: --log-file is a directory", *COLLECT, "--log-file", "{ws}/a-dir", names=("'--log-file'", "is a directory"))
for option, value in [("--temperature", "nan"), ("--temperature", "2.5"), ("--temperature", "-0.1"), ("--max-tokens", "0"),
                      ("--top-logprobs", "21"), ("--top-logprobs", "-1"), ("--budget", "nan"), ("--budget", "inf"),
                      ("--log-level", "verbose")]:
    case(USAGE, f"collect {option} {value}", *COLLECT, option, value, names=(f"'{option}'", value))

# -- paths of other commands ------------------------------------------------------------------------

case(USAGE, "world generate: --out is a directory", "world", "generate", "--out", "{ws}/a-dir", names=("'--out'",))
case(USAGE, "world generate: --out under a file", "world", "generate", "--out", "{ws}/notes.txt/w.jsonl", names=("'--out'",))
case(USAGE, "train: --data is missing", "train", "--student", "world:student-xs", "--data", "{ws}/nope.jsonl", "--out",
     "{ws}/student", names=("'--data'", "no such file"))
case(USAGE, "train: --sidecar is a directory", "train", "--student", "world:student-xs", "--data", "{ws}/train.jsonl",
     "--out", "{ws}/student", "--sidecar", "{ws}/a-dir", names=("'--sidecar'",))
case(USAGE, "train: --out is a file", "train", "--student", "world:student-xs", "--data", "{ws}/train.jsonl", "--out",
     "{ws}/notes.txt", names=("'--out'", "is a file"))
case(USAGE, "demo: --out is a file", "demo", "--out", "{ws}/notes.txt", names=("'--out'", "is a file"))


# -- the workspace -------------------------------------------------------------------------------------


def _store(path: Path, count: int = 12) -> None:
    from distillery.store import SQLiteStore

    store = SQLiteStore(path)
    for trajectory in varied_trajectories(count):
        store.put(trajectory)
    store.close()


def _special(kind: str, root: Path, path: Path) -> None:
    """Files that need building: '@truncated-store', '@corrupt-row', '@list-row', '@other-sqlite'."""
    if kind == "@other-sqlite":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (text TEXT)")
        return
    data = (root / "store.db").read_bytes()
    if kind == "@truncated-store":
        path.write_bytes(data[: len(data) // 2])
        return
    path.write_bytes(data)
    value = {"@corrupt-row": "{broken", "@list-row": "[1, 2]"}[kind]
    db = sqlite3.connect(path)
    db.execute("UPDATE trajectories SET data = ? WHERE rowid = 3", (value,))
    db.commit()
    db.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("template")
    _store(root / "store.db")
    (root / "cascade.toml").write_text(TIERS)
    (root / "out").mkdir()
    (root / "out" / "train.jsonl").write_text(jsonl(EXAMPLES))  # a dataset built earlier
    (root / "out" / "build.json").write_text('{"built": "earlier"}\n')
    (root / "export.jsonl").write_text(jsonl(TRAJECTORIES[:2]))
    (root / "trajectories.jsonl").write_text(jsonl(TRAJECTORIES))
    (root / "tasks.jsonl").write_text(TASKS)
    (root / "train.jsonl").write_text(jsonl(EXAMPLES))
    (root / "notes.txt").write_text("notes\n")
    (root / "a-dir").mkdir()
    assert not list(root.glob("*-wal")), "the template store must be checkpointed"
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every path and its content's hash. SQLite's own -shm index and an empty -wal, which opening a
    WAL-mode database can leave behind, do not count: the database file itself is compared."""
    empty = hashlib.sha256(b"").hexdigest()
    hashes = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
              for p in sorted(root.rglob("*"))}
    return {path: digest for path, digest in hashes.items()
            if not (path.endswith("-shm") or (path.endswith("-wal") and digest == empty))}


def _params():
    for c in CASES:
        yield pytest.param(c, id=c.id)


def test_there_are_at_least_100_cases():
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", list(_params()))
def test_malformed_input(c: Case, template: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    for name, content in c.files.items():
        path = ws / name
        if content is None:
            path.unlink()
        elif isinstance(content, str) and content.startswith("@"):
            _special(content, ws, path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
    before = snapshot(ws)
    outcome = invoke(*[a.replace("{ws}", str(ws)) for a in c.args], cwd=ws)
    names = [n.replace("{ws}", str(ws)) for n in c.names]
    assert "Traceback" not in outcome.output, outcome.output
    if c.expect == OK:
        assert outcome.code == 0, outcome.output
        return
    if c.expect == USAGE:
        assert_usage_error(outcome, *names)
    else:
        assert_failed_run(outcome, *names)
    assert snapshot(ws) == before, "a failed run changed, added or removed files"


def test_build_skip_invalid_leaves_unreadable_store_rows_out_and_says_so(template: Path, tmp_path: Path):
    """Without --skip-invalid every unreadable row is listed and nothing is built; with it, the rows are
    counted, listed in build.json and warned about, and the store is byte for byte what it was."""
    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    db = sqlite3.connect(ws / "store.db")
    db.execute("UPDATE trajectories SET data = '{broken' WHERE rowid = 3")
    db.execute("UPDATE trajectories SET data = '[1, 2]' WHERE rowid = 7")
    db.commit()
    db.close()
    store_bytes = (ws / "store.db").read_bytes()
    stopped = invoke("build", "--from-store", ws / "store.db", "--out", ws / "new")
    line = assert_failed_run(stopped, f"{ws / 'store.db'} row 3 (trajectory traj-2)", "(and 1 more)", "--skip-invalid")
    assert "row 7 (trajectory traj-6)" in stopped.output and not (ws / "new").exists(), line
    built = invoke("build", "--from-store", ws / "store.db", "--out", ws / "new", "--skip-invalid")
    assert built.code == 0, built.output
    summary = json.loads((ws / "new" / "build.json").read_text())
    assert summary["inputs"] == 12 and summary["removed"]["unreadable store row (--skip-invalid)"] == 2
    assert [s.split(": ")[0] for s in summary["skipped"][:2]] == [f"{ws / 'store.db'} row 3 (trajectory traj-2)",
                                                                  f"{ws / 'store.db'} row 7 (trajectory traj-6)"]
    assert any("2 store row(s) could not be read" in w for w in summary["warnings"])
    assert len((ws / "new" / "train.jsonl").read_text().splitlines()) == 10
    assert (ws / "store.db").read_bytes() == store_bytes


def test_a_step_cost_must_be_finite_and_not_negative_so_the_json_round_trip_stays_lossless():
    """NaN and infinity would be written to JSON as null and never read back; a negative cost corrupts totals."""
    from pydantic import ValidationError

    from distillery.trajectory import Step, Trajectory, Turn

    for bad in (float("nan"), float("inf"), float("-inf"), -0.01):
        for kind in (Turn, Step):
            with pytest.raises(ValidationError, match="cost_usd"):
                kind(cost_usd=bad)
    trajectory = Trajectory(task_id="t", query="q", steps=[Step(cost_usd=0.0), Step(cost_usd=1e-9), Step(cost_usd=12.5)])
    assert Trajectory.model_validate_json(trajectory.model_dump_json()) == trajectory
    assert trajectory.cost_usd == pytest.approx(12.500000001)
