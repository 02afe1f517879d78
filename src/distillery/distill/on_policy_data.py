"""What on-policy distillation is given: prompts, the user's tools in TRL's shape, and a teacher.

TRL's `DistillationTrainer` rolls the student out itself. It needs three things from distillery:

- **prompts**: the conversation up to the first assistant turn (system prompt and user query), read
  from a trajectory store or a training-data file;
- **tools**: callables it can run between turns. `BridgedTool` is a `ToolBox` tool in TRL's shape: a
  dict (the JSON schema the chat template renders, exactly what distillery's inference renders)
  that can also be called. Calls go through `Tool.run`, so arguments are validated and failures
  become the same "Error: ..." text the agent reads at inference. Async tools get a sync wrapper.
  Tools that must not be re-run (paid, with side effects) are *replayed*: answered from the
  results recorded in the trajectories, and a warning says so;
- **a teacher** that can score every token the student wrote: a local model sharing the student's
  tokenizer, or a vLLM server (`vllm:http://host:8000`). Teachers without logprobs are refused.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.chat_tokens import template_message
from distillery.errors import ConfigError
from distillery.tools import Tool, ToolBox
from distillery.trajectory import ToolCall

logger = logging.getLogger(__name__)

# URI schemes of teachers that cannot score given tokens, and why (one line each).
_NO_LOGPROB_TEACHERS = {
    "anthropic": "the Anthropic API returns no token logprobs",
    "openai": "OpenAI's API returns logprobs only for tokens it generates itself, not for the student's tokens "
    "(if this is a vLLM server, name it as vllm:http://host:port)",
}


# -- prompts ----------------------------------------------------------------------------------


def read_store_rows(path: str | Path) -> list[dict[str, Any]]:
    """HF chat rows (`messages`, `tools`) of every readable trajectory in a SQLite store, in a stable order."""
    from distillery.distill.trainer import chat_rows
    from distillery.store import SQLiteStore

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--from-store {path}: no such store")
    store = SQLiteStore(path, readonly=True)
    try:
        trajectories = list(store.iter_trajectories(on_invalid=lambda exc: logger.warning("skipped %s: %s", exc.origin, exc.problem)))
    finally:
        store.close()
    trajectories.sort(key=lambda t: (t.task_id, t.sample_index, t.id))
    if not trajectories:
        raise ConfigError(f"--from-store {path}: the store holds no trajectories")
    return chat_rows(trajectories)


def prompt_of(row: dict[str, Any], number: int) -> list[dict[str, str]]:
    """The messages before the first assistant turn: what the student is asked to continue."""
    prompt = []
    for message in row["messages"]:
        if message["role"] == "assistant":
            break
        prompt.append({"role": message["role"], "content": message.get("content") or ""})
    if not any(m["role"] == "user" for m in prompt):
        raise ConfigError(f"training example {number}: no user message before the first assistant turn")
    return prompt


def prompt_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `prompt` column TRL's trainer reads, one row per source row."""
    return [{"prompt": prompt_of(row, number)} for number, row in enumerate(rows)]


# -- tools ------------------------------------------------------------------------------------


def _canonical(name: str, arguments: dict[str, Any]) -> str:
    return ToolCall(name=name, arguments=arguments).canonical()


def recorded_results(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Tool results recorded in chat rows, by the canonical call (name + sorted arguments).

    Results are paired with their call by `tool_call_id`, or by order when the rows carry no ids.
    """
    found: dict[str, str] = {}
    for row in rows:
        pending: list[tuple[str, str]] = []  # (call id, canonical call), in the order they were made
        for message in row["messages"]:
            message = template_message(message)
            if message["role"] == "assistant":
                pending = []
                for call in message.get("tool_calls") or []:
                    function = call.get("function", call)
                    arguments = function.get("arguments") or {}
                    if isinstance(arguments, str):
                        try:
                            arguments = json.loads(arguments) if arguments.strip() else {}
                        except json.JSONDecodeError:
                            continue
                    pending.append((call.get("id") or "", _canonical(function["name"], arguments)))
            elif message["role"] == "tool" and pending:
                by_id = [p for p in pending if p[0] and p[0] == message.get("tool_call_id")]
                chosen = by_id[0] if by_id else pending[0]
                pending.remove(chosen)
                found.setdefault(chosen[1], message.get("content") or "")
    return found


@dataclass
class ToolStats:
    """What the rollouts did with tools; `distillation.json` records it."""

    calls: int = 0
    errors: int = 0
    replayed: int = 0
    replay_misses: int = 0
    calls_by_tool: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summed_over_processes(self, accelerator: Any) -> ToolStats:
        """The run's totals: each process ran the tools of its own episodes."""
        if accelerator.num_processes == 1:
            return self
        from accelerate.utils import gather_object

        total = ToolStats()
        for part in gather_object([self]):
            for name in ("calls", "errors", "replayed", "replay_misses"):
                setattr(total, name, getattr(total, name) + getattr(part, name))
            for tool_name, count in part.calls_by_tool.items():
                total.calls_by_tool[tool_name] = total.calls_by_tool.get(tool_name, 0) + count
        return total


def synchronous(tool: Tool) -> Tool:
    """`tool` itself, or for an async function a `Tool` that runs it to completion.

    `Tool.run` calls the function on a worker thread, which has no event loop, so `asyncio.run`
    is safe there even when the trainer itself runs inside one.
    """
    if not inspect.iscoroutinefunction(tool.fn):
        return tool
    coroutine_function = tool.fn

    def run_to_completion(**arguments: Any) -> Any:
        return asyncio.run(coroutine_function(**arguments))

    return Tool(run_to_completion, tool.spec, timeout_s=tool.timeout_s)


class BridgedTool(dict):
    """One distillery tool in the shape TRL's trainer takes.

    As a dict it is the `{"type": "function", "function": schema}` that `apply_chat_template`
    renders (a callable would be re-derived from its docstring by transformers and could differ
    from what inference shows). `__name__` is how TRL looks it up; calling it with the parsed
    arguments returns the text the tool message carries.
    """

    def __init__(self, tool: Tool, stats: ToolStats, replay: dict[str, str] | None = None):
        super().__init__({"type": "function", "function": tool.spec.model_dump()})
        self.__name__ = tool.name
        self.tool = synchronous(tool)
        self.stats = stats
        self.replay = replay  # None: run the tool; a dict: answer from these recorded results only

    def __call__(self, **arguments: Any) -> str:
        self.stats.calls += 1
        self.stats.calls_by_tool[self.__name__] = self.stats.calls_by_tool.get(self.__name__, 0) + 1
        if self.replay is not None:
            return self._replayed(arguments)
        result = self.tool.run(ToolCall(name=self.__name__, arguments=arguments))
        self.stats.errors += int(result.is_error)
        return result.content

    def _replayed(self, arguments: dict[str, Any]) -> str:
        recorded = self.replay.get(_canonical(self.__name__, arguments))
        if recorded is not None:
            self.stats.replayed += 1
            return recorded
        self.stats.replay_misses += 1
        self.stats.errors += 1
        if self.stats.replay_misses == 1:
            logger.warning("replay: %s was called with arguments no recorded trajectory has (%s); the student reads an "
                           "error result, and the tool is NOT run", self.__name__, json.dumps(arguments, sort_keys=True))
        return f"Error: {self.__name__} is replayed from recorded trajectories and none called it with these arguments"


def bridge_tools(toolbox: ToolBox, *, replay: list[str] | tuple[str, ...] = (), rows: list[dict[str, Any]] = (),
                 stats: ToolStats | None = None) -> list[BridgedTool]:
    """The toolbox in TRL's shape; the tools named in `replay` answer from the results recorded in `rows`."""
    unknown = sorted(set(replay) - {t.name for t in toolbox})
    if unknown:
        raise ConfigError(f"--replay-tools {', '.join(unknown)}: no such tool (tools: {', '.join(t.name for t in toolbox)})")
    stats = stats if stats is not None else ToolStats()
    recorded = recorded_results(list(rows)) if replay else {}
    bridged = []
    for tool in toolbox:
        if tool.name in replay:
            own = {key: value for key, value in recorded.items() if json.loads(key).get("name") == tool.name}
            logger.warning("replay: %s is NOT run during rollouts; its calls are answered from %d recorded results",
                           tool.name, len(own))
            bridged.append(BridgedTool(tool, stats, replay=own))
        else:
            bridged.append(BridgedTool(tool, stats))
    return bridged


# -- teachers ---------------------------------------------------------------------------------


@dataclass
class ServerTeacher:
    """A teacher behind a vLLM OpenAI-compatible server, which scores tokens with `prompt_logprobs`."""

    base_url: str  # without the trailing /v1


def resolve_teacher(spec: Any) -> Any:
    """A `ServerTeacher` for `vllm:URL` or an http(s) URL; otherwise `spec` unchanged (a local model).

    Teachers that cannot score the student's tokens are refused here, before anything loads.
    """
    if spec is None:
        raise ConfigError("--signal on-policy needs --teacher: a local model (world:teacher, hf:./dir) sharing the "
                          "student's tokenizer, or a vLLM server (vllm:http://host:8000)")
    if not isinstance(spec, str):
        return spec
    scheme, _, rest = spec.partition(":")
    if scheme in _NO_LOGPROB_TEACHERS:
        raise ConfigError(f"--teacher {spec}: cannot be an on-policy teacher: {_NO_LOGPROB_TEACHERS[scheme]}, and "
                          "on-policy distillation needs the teacher's logprobs of every token the student wrote "
                          "(use --signal sequence for this teacher)")
    url = rest if scheme == "vllm" else spec if scheme in ("http", "https") else None
    if url is None:
        return spec
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--teacher {spec}: expected vllm:http://host:port")
    return ServerTeacher(url)


def check_same_tokenizer(student_tokenizer: Any, teacher_tokenizer: Any, teacher: str) -> None:
    """Refuse a local teacher whose tokenizer differs from the student's (one line, with what differs)."""
    student_vocab, teacher_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student_vocab == teacher_vocab:
        return
    differing = len(set(student_vocab.items()) ^ set(teacher_vocab.items()))
    raise ConfigError(
        f"--teacher {teacher}: its tokenizer differs from the student's ({len(teacher_vocab)} vs {len(student_vocab)} "
        f"tokens, {differing} entries differ); on-policy distillation compares the two next-token distributions "
        "token by token, so they must share one (GOLD's cross-tokenizer alignment is not wired in)"
    )


def check_server_tokenizer(client: Any, student_tokenizer: Any, teacher: str) -> None:
    """Compare the server's tokenization of a probe text with the student's, through vLLM's `/tokenize`.

    A server without `/tokenize` cannot be checked: that is said, and training goes on.
    """
    probe = '<|im_start|>user\nHow many units of SKU-1042 are in stock in Berlin? 12.5 kg\n<tool_call>{"a": 1}'
    response = client.session.post(f"{client.base_url}/tokenize", json={
        "model": client.model, "prompt": probe, "add_special_tokens": False})
    if response.status_code != 200:
        logger.warning("--teacher %s: the server has no /tokenize endpoint, so its tokenizer could not be compared "
                       "with the student's", teacher)
        return
    theirs = response.json().get("tokens")
    ours = list(student_tokenizer(probe, add_special_tokens=False)["input_ids"])
    if theirs != ours:
        raise ConfigError(
            f"--teacher {teacher}: the server tokenizes a probe text differently from the student ({len(theirs)} vs "
            f"{len(ours)} tokens); on-policy distillation needs one shared tokenizer (GOLD's cross-tokenizer "
            "alignment is not wired in)"
        )
