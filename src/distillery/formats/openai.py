"""OpenAI Chat Completions, both directions: messages, tool calls, tools, finish reasons, and the
fine-tuning JSONL record.

`models/openai.py` writes requests with `messages_to_wire` and reads calls with
`tool_call_from_wire`; the gateway reads client requests with `messages_from_wire` and
`tools_from_wire` and answers with `turn_to_wire`; the dataset builder writes `fine_tuning_record`.
Tool-call arguments travel as JSON *strings* (https://platform.openai.com/docs/api-reference/chat).

OpenAI has fewer finish reasons than we have stop reasons: a stop sequence, a pause and an error all
read as "stop" on the wire, and a refusal as "content_filter".
"""

from __future__ import annotations

import json
from typing import Any

from distillery.formats import WireFormatError, joined_text
from distillery.trajectory import Message, ThinkingBlock, ToolCall, ToolSpec, Turn

FINISH_REASON_FROM_WIRE = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}
FINISH_REASON_TO_WIRE = {
    "end_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "stop_sequence": "stop",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "error": "stop",
}


def stop_reason_from_wire(finish_reason: str | None) -> str | None:
    """Ours for the API's `finish_reason`; None for one the API did not document."""
    return FINISH_REASON_FROM_WIRE.get(finish_reason or "")


def stop_reason_to_wire(ours: str | None) -> str:
    return FINISH_REASON_TO_WIRE.get(ours or "", "stop")


# --- tool calls -----------------------------------------------------------------------------------


def arguments_json(arguments: Any) -> str:
    """Arguments as the JSON string a chat template's `tojson` would write for the same object.

    transformers' `tojson` is `json.dumps(x, ensure_ascii=False)` with default separators and key
    order, so a template that renders a string verbatim produces exactly the text it would have
    produced from the object. OpenAI's own fine-tuning examples use the same spacing.
    """
    return json.dumps(arguments, ensure_ascii=False)


def call_arguments(call: ToolCall) -> str:
    """A call's arguments as the wire's JSON string: what the model wrote, verbatim, when it did not
    parse, so the model sees its own mistake."""
    if call.parse_error is not None and call.raw_arguments is not None:
        return call.raw_arguments
    return arguments_json(call.arguments)


def tool_call_dict(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    """The one spelling of a function call; `arguments` is a JSON string on the wire, an object for
    a chat template."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_call_to_wire(call: ToolCall) -> dict[str, Any]:
    return tool_call_dict(call.id, call.name, call_arguments(call))


def parse_arguments(raw: str | None) -> tuple[dict[str, Any], str | None]:
    """`(arguments, parse_error)` for a tool call's argument string. Empty means no arguments."""
    if raw is None or not raw.strip():
        return {}, None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return {}, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    if not isinstance(value, dict):
        return {}, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, None


def tool_call_from_wire(call_id: str | None, name: str, arguments: Any) -> ToolCall:
    """A call as the wire gives it. Arguments that do not parse are kept verbatim (`raw_arguments`,
    `parse_error`), never raised; an object instead of a string is taken as it is (some clients)."""
    ids = {"id": call_id} if call_id else {}  # else ToolCall makes one
    if isinstance(arguments, dict):
        return ToolCall(**ids, name=name, arguments=arguments)
    if arguments is not None and not isinstance(arguments, str):
        return ToolCall(**ids, name=name, raw_arguments=json.dumps(arguments),
                        parse_error=f"arguments must be a JSON string, got {type(arguments).__name__}")
    parsed, error = parse_arguments(arguments)
    return ToolCall(**ids, name=name, arguments=parsed, raw_arguments=arguments if error else None, parse_error=error)


def _wire_tool_call(raw: Any, where: str) -> ToolCall:
    if not isinstance(raw, dict) or not isinstance(raw.get("function"), dict):
        raise WireFormatError(f"{where}: each tool call needs a 'function' object", param=where)
    function = raw["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise WireFormatError(f"{where}.function.name is missing", param=f"{where}.function.name")
    return tool_call_from_wire(str(raw.get("id") or ""), name, function.get("arguments"))


# --- messages -------------------------------------------------------------------------------------


def thinking_from_wire(reasoning: Any) -> list[ThinkingBlock]:
    """`reasoning_content` (vLLM, DeepSeek) as thinking; the official API sends none."""
    return [ThinkingBlock(type="thinking", thinking=reasoning)] if isinstance(reasoning, str) and reasoning else []


def thinking_to_wire(thinking: list[ThinkingBlock]) -> str:
    """Visible thinking as one `reasoning_content` string (redacted thinking has no text)."""
    return "".join(block.thinking for block in thinking if block.type == "thinking")


def assistant_to_wire(text: str, tool_calls: list[ToolCall]) -> dict[str, Any]:
    """An assistant message: `content` is null beside tool calls when there is no text, "" without them."""
    entry: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        entry["tool_calls"] = [tool_call_to_wire(call) for call in tool_calls]
    elif entry["content"] is None:
        entry["content"] = ""
    return entry


def messages_to_wire(messages: list[Message]) -> list[dict[str, Any]]:
    """Our messages as a Chat Completions request's `messages`.

    Thinking is not sent back (the format has no place for it); neither is a tool result's
    `is_error` (the result's text says it).
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "assistant":
            out.append(assistant_to_wire(message.content, message.tool_calls))
        elif message.role == "tool":
            out.append({"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content})
        else:
            out.append({"role": message.role, "content": message.content})
    return out


def text_from_wire(content: Any, where: str) -> str:
    """A message's content as text: a string, null, or a list of `{"type": "text"}` parts."""
    return joined_text(content, where, kinds=("text", "refusal"), sep="", what="content")


def messages_from_wire(raw_messages: Any) -> list[Message]:
    """A request's `messages` as ours, checked as OpenAI checks them (a `WireFormatError` otherwise)."""
    if not isinstance(raw_messages, list) or not raw_messages:
        raise WireFormatError("'messages' must be a non-empty list", param="messages")
    messages: list[Message] = []
    call_names: dict[str, str] = {}
    # The calls of the last assistant message that still want a tool message, and where it was:
    # OpenAI answers 400 when a tool message answers nothing or a call goes unanswered.
    unanswered: dict[str, None] = {}
    calls_at: int | None = None
    for i, raw in enumerate(raw_messages):
        where = f"messages[{i}]"
        if not isinstance(raw, dict):
            raise WireFormatError(f"{where} must be an object", param=where)
        role = raw.get("role")
        if role != "tool":
            _check_answered(unanswered, calls_at)
            calls_at = None
        content = text_from_wire(raw.get("content"), f"{where}.content")
        if role in ("system", "developer"):
            messages.append(Message(role="system", content=content))
        elif role == "user":
            messages.append(Message(role="user", content=content))
        elif role == "assistant":
            raw_calls = raw.get("tool_calls") or []
            if not isinstance(raw_calls, list):
                raise WireFormatError(f"{where}.tool_calls must be a list", param=f"{where}.tool_calls")
            calls = [_wire_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(raw_calls)]
            call_names.update({c.id: c.name for c in calls})
            if calls:
                unanswered, calls_at = dict.fromkeys(c.id for c in calls), i
            messages.append(Message(role="assistant", content=content, tool_calls=calls,
                                    thinking=thinking_from_wire(raw.get("reasoning_content"))))
        elif role == "tool":
            call_id = raw.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise WireFormatError(f"{where}.tool_call_id is missing", param=f"{where}.tool_call_id")
            if calls_at is None:
                raise WireFormatError("Invalid parameter: messages with role 'tool' must be a response to a preceding "
                                      "message with 'tool_calls'.", param=f"{where}.role")
            if call_id not in unanswered:
                raise WireFormatError(f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' of "
                                      "previous message.", param=f"{where}.tool_call_id")
            del unanswered[call_id]
            messages.append(Message(role="tool", content=content, tool_call_id=call_id,
                                    name=call_names.get(call_id, raw.get("name"))))
        else:
            raise WireFormatError(f"{where}.role {role!r} is not supported; use system, developer, user, assistant "
                                  "or tool", param=f"{where}.role")
    _check_answered(unanswered, calls_at)
    return messages


def _check_answered(unanswered: dict[str, None], calls_at: int | None) -> None:
    """OpenAI's rule: an assistant message's tool calls are each answered before anything else."""
    if calls_at is not None and unanswered:
        raise WireFormatError(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(unanswered)}",
            param=f"messages[{calls_at}].role",
        )


def turn_to_wire(turn: Turn) -> dict[str, Any]:
    """A response choice's `message`, with visible reasoning in vLLM's `reasoning_content`."""
    message = {**assistant_to_wire(turn.text, turn.tool_calls), "refusal": None, "annotations": []}
    reasoning = thinking_to_wire(turn.thinking)
    if reasoning:
        message["reasoning_content"] = reasoning
    return message


# --- tools ----------------------------------------------------------------------------------------


def tools_to_wire(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
    ]


def tools_from_wire(raw_tools: Any) -> list[ToolSpec]:
    if raw_tools is None:
        return []
    if not isinstance(raw_tools, list):
        raise WireFormatError("'tools' must be a list", param="tools")
    specs = []
    for i, raw in enumerate(raw_tools):
        where = f"tools[{i}]"
        if not isinstance(raw, dict) or raw.get("type", "function") != "function" or not isinstance(raw.get("function"), dict):
            raise WireFormatError(f"{where} must be {{\"type\": \"function\", \"function\": {{...}}}}", param=where)
        function = raw["function"]
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise WireFormatError(f"{where}.function.name is missing", param=f"{where}.function.name")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise WireFormatError(f"{where}.function.parameters must be a JSON Schema object",
                                  param=f"{where}.function.parameters")
        specs.append(ToolSpec(name=function["name"], description=function.get("description") or "", parameters=parameters))
    return specs


def tool_choice_from_wire(choice: Any) -> Any:
    """`tool_choice` checked; ours uses the OpenAI spelling, so it comes back as it was."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict) \
            and isinstance(choice["function"].get("name"), str):
        return {"type": "function", "function": {"name": choice["function"]["name"]}}
    raise WireFormatError("'tool_choice' must be \"auto\", \"none\", \"required\" or "
                          "{\"type\": \"function\", \"function\": {\"name\": ...}}", param="tool_choice")


# --- fine-tuning JSONL ----------------------------------------------------------------------------

# The keys OpenAI documents for a function definition; others are left out of fine-tuning tools.
FUNCTION_KEYS = ("name", "description", "parameters", "strict")


def fine_tuning_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tools with only the function keys OpenAI's format documents."""
    return [{**tool, "function": {k: v for k, v in tool["function"].items() if k in FUNCTION_KEYS}}
            for tool in tools]


def fine_tuning_record(
    messages: list[dict[str, Any]],
    weights: list[int],
    tools: list[dict[str, Any]],
    *,
    parallel_tool_calls: bool = True,
) -> dict[str, Any]:
    """One line of OpenAI chat fine-tuning JSONL, from chat-template messages (arguments as objects).

    Arguments become JSON strings; an assistant message that only calls tools has no `content`
    (as in OpenAI's function-calling fine-tuning examples); tool messages carry only role,
    tool_call_id and content; every assistant message gets its `weight`.
    """
    out: list[dict[str, Any]] = []
    weight_iter = iter(weights)
    for m in messages:
        if m["role"] == "assistant":
            item: dict[str, Any] = {"role": "assistant"}
            if m["content"] or not m.get("tool_calls"):
                item["content"] = m["content"]
            if m.get("tool_calls"):
                item["tool_calls"] = [
                    tool_call_dict(c["id"], c["function"]["name"], arguments_json(c["function"]["arguments"]))
                    for c in m["tool_calls"]
                ]
            item["weight"] = next(weight_iter)
        elif m["role"] == "tool":
            item = {"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]}
        else:
            item = {"role": m["role"], "content": m["content"]}
        out.append(item)
    record: dict[str, Any] = {"messages": out}
    if tools:
        record["tools"] = fine_tuning_tools(tools)
        record["parallel_tool_calls"] = parallel_tool_calls
    return record
