"""Anthropic Messages API, both directions: messages, content blocks, tools, tool choice, stop reasons.

`models/anthropic.py` writes requests with `messages_to_wire` and reads responses with
`assistant_from_wire`; the gateway reads client requests with `messages_from_wire` and
`tools_from_wire` and answers with `turn_to_wire` (https://docs.anthropic.com/en/api/messages).

Our messages are OpenAI-shaped: system prompts become the top-level `system`, tool results become
`tool_result` blocks in a user turn, and thinking keeps its signature byte for byte.

Our stop reasons are Anthropic's own names, plus "error" (a failed call, which the API never
sends). From the wire, a context-window overflow is, for an agent, the same as running out of
tokens: the turn is cut off.
"""

from __future__ import annotations

from typing import Any

from distillery.formats import WireFormatError, joined_text
from distillery.trajectory import Message, ThinkingBlock, ToolCall, ToolSpec, Turn

# Every stop reason the API documents, mapped onto ours.
STOP_REASON_FROM_WIRE = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "refusal": "refusal",
    "pause_turn": "pause_turn",
    "model_context_window_exceeded": "max_tokens",
}
WIRE_STOP_REASONS = ("end_turn", "tool_use", "max_tokens", "stop_sequence", "refusal", "pause_turn")


def stop_reason_from_wire(value: str | None) -> str | None:
    """Ours for the API's `stop_reason`; None for one the API did not document."""
    return STOP_REASON_FROM_WIRE.get(value or "")


def stop_reason_to_wire(ours: str | None) -> str:
    """The API's `stop_reason` for ours; anything else (an error) reads as a finished turn."""
    return ours if ours in WIRE_STOP_REASONS else "end_turn"


# --- content blocks -------------------------------------------------------------------------------


def tool_use_block(call: ToolCall) -> dict[str, Any]:
    # A call whose arguments did not parse goes with empty input: the API needs an object, and the
    # tool result that follows tells the model what went wrong.
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}


def _tool_use_from_wire(block: dict[str, Any], where: str | None) -> ToolCall:
    name, call_id, arguments = block.get("name"), block.get("id"), block.get("input", {})
    if isinstance(name, str) and isinstance(call_id, str) and isinstance(arguments, dict):
        return ToolCall(id=call_id, name=name, arguments=arguments)
    if where is not None:
        raise WireFormatError(f"{where}: tool_use needs 'id', 'name' and an 'input' object")
    # The API wrote input that is not an object: keep what it wrote, as a failed call.
    return ToolCall(id=str(call_id), name=str(name), raw_arguments=repr(arguments),
                    parse_error="tool input is not a JSON object")


def assistant_from_wire(
    blocks: list[dict[str, Any]], *, where: str | None = None
) -> tuple[str, list[ThinkingBlock], list[ToolCall]]:
    """An assistant turn's content blocks as `(text, thinking, tool_calls)`.

    A response from the API (no `where`) may hold server-tool blocks (web search, code execution):
    they are not calls for us to run and are skipped here (they go back to the API verbatim through
    `Message.provider_content`). A client's request (`where` names its field) may hold only what we
    can read, and anything else raises `WireFormatError`.
    """
    texts: list[str] = []
    thinking: list[ThinkingBlock] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(ThinkingBlock(thinking=str(block.get("thinking", "")), signature=block.get("signature")))
        elif kind == "redacted_thinking":
            thinking.append(ThinkingBlock(type="redacted_thinking", data=block.get("data")))
        elif kind == "tool_use":
            calls.append(_tool_use_from_wire(block, None if where is None else f"{where}.{j}"))
        elif where is not None:
            raise WireFormatError(f"{where}.{j}: block type {kind!r} is not supported in an assistant turn")
    return "".join(texts), thinking, calls


def turn_to_wire(turn: Turn, *, thinking: bool) -> list[dict[str, Any]]:
    """A response's content blocks; thinking only when the client asked for it.

    A response always has a block, so a turn with neither text nor calls is one empty text block.
    """
    blocks: list[dict[str, Any]] = []
    for block in turn.thinking if thinking else []:
        if block.type == "redacted_thinking":
            blocks.append({"type": "redacted_thinking", "data": block.data or ""})
        else:
            blocks.append({"type": "thinking", "thinking": block.thinking, "signature": block.signature or ""})
    if turn.text or not turn.tool_calls:
        blocks.append({"type": "text", "text": turn.text})
    blocks.extend(tool_use_block(call) for call in turn.tool_calls)
    return blocks


# --- messages to the API --------------------------------------------------------------------------


def _thinking_blocks(message: Message) -> list[dict[str, Any]]:
    """Thinking the API will accept back: signed thinking and redacted thinking, unchanged.

    Unsigned thinking (from another provider or a local model) cannot be verified by the API and
    would be rejected, so it is left out.
    """
    blocks = []
    for block in message.thinking:
        if block.type == "redacted_thinking" and block.data:
            blocks.append({"type": "redacted_thinking", "data": block.data})
        elif block.type == "thinking" and block.signature:
            blocks.append({"type": "thinking", "thinking": block.thinking, "signature": block.signature})
    return blocks


def _usable_provider_content(message: Message) -> bool:
    """Whether `provider_content` can be sent back as is.

    It must be a list of typed blocks, and its tool_use ids must be exactly the message's tool
    calls: the tool results that follow refer to those ids, so content edited or produced elsewhere
    (a cascade that replaced the call) falls back to the neutral conversion.
    """
    content = message.provider_content
    if not content or not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in content):
        return False
    block_ids = [b.get("id") for b in content if b["type"] == "tool_use"]
    return block_ids == [call.id for call in message.tool_calls]


def _assistant_blocks(message: Message) -> list[dict[str, Any]]:
    if _usable_provider_content(message):
        return [dict(block) for block in message.provider_content]
    blocks = _thinking_blocks(message)
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    blocks.extend(tool_use_block(call) for call in message.tool_calls)
    return blocks


def messages_to_wire(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """Our messages as the Messages API wants them: `(system, messages)`.

    System messages become the top-level `system` (joined by blank lines). Tool results become
    `tool_result` blocks in a user turn, and consecutive turns of the same role are merged into one,
    so any run of tool messages is one user message, as the API requires.
    """
    system_parts: list[str] = []
    out: list[dict[str, Any]] = []

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": list(blocks)})

    for message in messages:
        if message.role == "system":
            if message.content:
                system_parts.append(message.content)
        elif message.role == "user":
            append("user", [{"type": "text", "text": message.content}] if message.content else [])
        elif message.role == "assistant":
            append("assistant", _assistant_blocks(message))
        elif message.role == "tool":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content,
            }
            if message.is_error:
                block["is_error"] = True
            append("user", [block])
    # Within a user turn the API wants tool results before any text.
    for turn in out:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b.get("type") != "tool_result")
    return ("\n\n".join(system_parts) or None), out


# --- messages from a client -----------------------------------------------------------------------


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise WireFormatError(f"{where}: content must be a string or a list of content blocks")
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise WireFormatError(f"{where}[{i}]: each content block needs a 'type'")
    return content


def _tool_result_text(content: Any, where: str) -> str:
    return joined_text(content, where, kinds=("text",), sep="\n", what="tool_result content")


def _system_text(system: Any) -> str | None:
    if system is None:
        return None
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(str(b.get("text", "")) for b in _blocks(system, "system") if b.get("type") == "text")
    raise WireFormatError("'system' must be a string or a list of text blocks")


def messages_from_wire(raw_messages: Any, system: Any = None) -> list[Message]:
    """A request's `system` and `messages` as ours, checked as the API checks them."""
    if not isinstance(raw_messages, list) or not raw_messages:
        raise WireFormatError("messages: must be a non-empty list")
    messages: list[Message] = []
    system_text = _system_text(system)
    if system_text:
        messages.append(Message(role="system", content=system_text))
    call_names: dict[str, str] = {}
    # Anthropic's rule: the tool_use blocks of an assistant turn are answered, each by a
    # tool_result, in the very next (user) message, and a tool_result answers only those.
    previous_uses: dict[str, None] = {}
    for i, raw in enumerate(raw_messages):
        where = f"messages.{i}"
        if not isinstance(raw, dict):
            raise WireFormatError(f"{where}: must be an object with 'role' and 'content'")
        role = raw.get("role")
        blocks = _blocks(raw.get("content"), f"{where}.content")
        uses, previous_uses = previous_uses, {}
        if role != "user":
            _check_answered(uses, [], i - 1)
        if role == "user":
            texts: list[str] = []
            for j, block in enumerate(blocks):
                kind = block["type"]
                if kind == "text":
                    texts.append(str(block.get("text", "")))
                elif kind == "tool_result":
                    call_id = block.get("tool_use_id")
                    if not isinstance(call_id, str) or not call_id:
                        raise WireFormatError(f"{where}.content.{j}.tool_use_id: Field required")
                    if call_id not in uses:
                        raise WireFormatError(
                            f"{where}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {call_id}. "
                            "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        )
                    messages.append(Message(
                        role="tool", tool_call_id=call_id, name=call_names.get(call_id),
                        content=_tool_result_text(block.get("content"), f"{where}.content.{j}.content"),
                        is_error=bool(block.get("is_error", False)),
                    ))
                else:
                    raise WireFormatError(f"{where}.content.{j}: block type {kind!r} is not supported here; "
                                          "send text or tool_result")
            _check_answered(uses, [b.get("tool_use_id") for b in blocks if b["type"] == "tool_result"], i - 1)
            if texts:
                messages.append(Message(role="user", content="\n".join(texts)))
        elif role == "assistant":
            text, thinking, calls = assistant_from_wire(blocks, where=f"{where}.content")
            call_names.update({call.id: call.name for call in calls})
            previous_uses = dict.fromkeys(call.id for call in calls)
            messages.append(Message(role="assistant", content=text, tool_calls=calls, thinking=thinking))
        else:
            raise WireFormatError(f"{where}.role: Input should be 'user' or 'assistant'")
    return messages


def _check_answered(uses: dict[str, None], answered: list[Any], at: int) -> None:
    missing = [call_id for call_id in uses if call_id not in answered]
    if missing:
        raise WireFormatError(
            f"messages.{at}: `tool_use` ids were found without `tool_result` blocks immediately after: "
            f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block in the "
            "next message."
        )


# --- tools ----------------------------------------------------------------------------------------


def tools_to_wire(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]


def tools_from_wire(raw_tools: Any) -> list[ToolSpec]:
    if raw_tools is None:
        return []
    if not isinstance(raw_tools, list):
        raise WireFormatError("tools: must be a list")
    specs = []
    for i, raw in enumerate(raw_tools):
        if not isinstance(raw, dict):
            raise WireFormatError(f"tools.{i}: must be an object")
        if raw.get("type") not in (None, "custom"):
            raise WireFormatError(f"tools.{i}: server tool {raw.get('type')!r} is not supported by this gateway; "
                                  "define client tools with name, description and input_schema")
        name, schema = raw.get("name"), raw.get("input_schema")
        if not isinstance(name, str) or not name:
            raise WireFormatError(f"tools.{i}.name: Field required")
        if not isinstance(schema, dict):
            raise WireFormatError(f"tools.{i}.input_schema: Field required")
        specs.append(ToolSpec(name=name, description=raw.get("description") or "", parameters=schema))
    return specs


def tool_choice_to_wire(choice: Any) -> dict[str, Any]:
    """Accept Anthropic's `{"type": ...}` or the OpenAI spellings ("auto", "required", "none", a name)."""
    if isinstance(choice, dict):
        if choice.get("type") == "function":  # OpenAI's {"type": "function", "function": {"name": ...}}
            return {"type": "tool", "name": choice["function"]["name"]}
        return choice
    if choice in ("auto", "any", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": str(choice)}


def tool_choice_from_wire(choice: Any) -> tuple[Any, bool | None]:
    """Anthropic's tool_choice as ours (the OpenAI spelling), plus its parallel-call setting."""
    if choice is None:
        return None, None
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise WireFormatError("tool_choice: must be {\"type\": \"auto\" | \"any\" | \"tool\" | \"none\"}")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kind = choice["type"]
    if kind == "tool":
        if not isinstance(choice.get("name"), str):
            raise WireFormatError("tool_choice.name: Field required")
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    return {"auto": "auto", "any": "required", "none": "none"}[kind], parallel
