"""The Hermes/Qwen chat convention that local models (a real Qwen and the bundled world model) share.

Local models see tools inside `<tools></tools>` in the system turn, write calls as
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, and read results inside
`<tool_response></tool_response>`. Rendering goes through the tokenizer's own
`apply_chat_template(messages, tools=...)`, so a real Qwen tokenizer and the world tokenizer take
one code path. Both directions live here: our `Message`s to the dicts those templates take
(`to_hf_messages`, and `arrow_message` for dataset rows), tool calls parsed back out of generated
text (`parse_tool_calls`), and the world tokenizer's template. The dicts are OpenAI-shaped, so the
call spelling is `formats.openai.tool_call_dict`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from distillery.formats.openai import arguments_json, tool_call_dict
from distillery.trajectory import Message, ToolCall, ToolSpec

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def to_hf_tools(tools: list[ToolSpec] | None) -> list[dict[str, Any]] | None:
    """Tool specs in the `{"type": "function", "function": {...}}` form chat templates expect."""
    if not tools:
        return None
    return [{"type": "function", "function": spec.model_dump()} for spec in tools]


def to_hf_message(message: Message) -> dict[str, Any]:
    """One message as the dict `apply_chat_template` takes (arguments stay objects).

    This shape is right for rendering a prompt now. Do not store it in Arrow/`datasets` columns:
    Arrow unifies structs across rows, so argument objects with different keys come back padded
    with `None` keys and render as `"city": null`. Stored rows go through `arrow_message`.
    """
    item: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        item["tool_calls"] = [
            # A call whose arguments never parsed is rendered as the model wrote it.
            tool_call_dict(call.id, call.name, call.arguments if call.parse_error is None else (call.raw_arguments or ""))
            for call in message.tool_calls
        ]
    if message.role == "tool":
        item["tool_call_id"] = message.tool_call_id
        if message.name:
            item["name"] = message.name
    return item


def to_hf_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Our messages as the dicts `apply_chat_template` takes (see `to_hf_message`)."""
    return [to_hf_message(m) for m in messages]


# Every stored chat message has exactly these keys, so Arrow infers one struct type whatever rows
# come first, and a missing value is an explicit None that chat templates read as "absent"
# (`{% if message.tool_calls %}` is false for None).
ARROW_MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name")


def arrow_message(message: dict[str, Any]) -> dict[str, Any]:
    """A chat-template message (or a stored row's) in the shape that survives Arrow's struct unification.

    Arrow merges the keys of every struct in a column, so `arguments` objects with different keys
    would come back padded with `None` and a template would render `"city": null` into the
    training text. Arguments are therefore JSON strings, which Hermes/Qwen templates write verbatim
    (`{% if arguments is string %}`), giving the same text as the original object.
    """
    calls = None
    if message.get("tool_calls"):
        calls = []
        for call in message["tool_calls"]:
            function = call.get("function", call)
            arguments = function.get("arguments", {})
            calls.append(tool_call_dict(call.get("id", ""), function["name"],
                                        arguments if isinstance(arguments, str) else arguments_json(arguments)))
    return {
        "role": message["role"],
        "content": message.get("content") or "",
        "tool_calls": calls,
        "tool_call_id": message.get("tool_call_id"),
        "name": message.get("name"),
    }


def parse_tool_calls(text: str, *, id_prefix: str = "call_") -> tuple[str, list[ToolCall]]:
    """Split generated text into its visible content and the `<tool_call>` blocks in it.

    A block whose JSON does not parse (or has no name) still becomes a `ToolCall`, with
    `parse_error` set and the raw text kept, so the agent sees an error result instead of the
    call silently vanishing.
    """
    start = text.find(TOOL_CALL_OPEN)
    if start < 0:
        return text.strip(), []
    content = text[:start].strip()
    calls: list[ToolCall] = []
    for index, match in enumerate(_TOOL_CALL_RE.finditer(text[start:])):
        raw = match.group(1).strip()
        call_id = f"{id_prefix}{index}"
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError as exc:
            calls.append(ToolCall(id=call_id, name="", raw_arguments=raw, parse_error=f"invalid JSON: {exc.msg}"))
            continue
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            calls.append(ToolCall(id=call_id, name="", raw_arguments=raw, parse_error="no 'name' in tool call"))
            continue
        arguments = payload.get("arguments", {})
        if isinstance(arguments, str):  # some models double-encode arguments
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass
        if not isinstance(arguments, dict):
            calls.append(
                ToolCall(
                    id=call_id,
                    name=payload["name"],
                    raw_arguments=json.dumps(payload.get("arguments")),
                    parse_error="arguments are not a JSON object",
                )
            )
            continue
        calls.append(ToolCall(id=call_id, name=payload["name"], arguments=arguments))
    return content, calls


# The world tokenizer's chat template. Its output is character-for-character what Qwen2.5's
# template renders for the same messages and tools; it adds `{% generation %}` markers around what
# the assistant writes, so TRL's `assistant_only_loss` can mask everything else.
HERMES_CHAT_TEMPLATE = r"""
{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
{{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
{%- for tool in tools %}{{- '\n' }}{{- tool | tojson }}{%- endfor %}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant\n' }}
{%- generation %}
{{- message.content or '' }}
{%- if message.tool_calls %}
{%- for tool_call in message.tool_calls %}
{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
{%- if (loop.first and message.content) or not loop.first %}{{- '\n' }}{%- endif %}
{{- '<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' }}
{%- if tool_call.arguments is string %}{{- tool_call.arguments }}{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}
{{- '}\n</tool_call>' }}
{%- endfor %}
{%- endif %}
{{- '<|im_end|>' }}
{%- endgeneration %}
{{- '\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
""".strip()

SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
