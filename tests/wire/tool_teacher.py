"""A deterministic stand-in for GPT-4o as a tool-using teacher, on the OpenAI Chat Completions wire format.

It answers the travel assistant of `examples/own_agent/` (tools `get_weather(city)` and
`convert_currency(amount, source, target)`) the way GPT-4o does:

- it calls tools with **no text before them**: `content` is null and `tool_calls` is set;
- when a query needs several calls (the weather in two cities), they come in **one turn**, as
  parallel calls;
- after the tool results it answers in one sentence, from those results.

Which calls a query needs is computed from the query (regular expressions over the phrasings in
the example files), so the same conversation always gets the same reply, ids included. Only tools
the request offers are called; a query that needs none, or a conversation whose results contain an
error, gets a plain text answer.

    with ScriptedOpenAIServer(responder=tool_teacher) as server:   # tests.wire.openai_server
        ... OPENAI_BASE_URL=server.base_url distillery collect --teacher openai:gpt-4o ...

    python -m tests.wire.tool_teacher     # the same server in the foreground; prints its base URL
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from tests.wire.openai_server import RecordedRequest, chat_completion, choice, usage

MODEL = "gpt-4o-2024-08-06"

_CURRENCY = re.compile(r"(\d+(?:\.\d+)?)\s+([A-Z]{3})\s+(?:to|in|into)\s+([A-Z]{3})\b")
_CITY = re.compile(r"\b([A-Z][a-z]+)\b")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def needed_calls(query: str) -> list[tuple[str, dict[str, Any]]]:
    """The tool calls (name, arguments) a query needs, in order."""
    money = _CURRENCY.search(query)
    if money:
        amount_text, source, target = money.groups()
        amount: float | int = float(amount_text) if "." in amount_text else int(amount_text)
        return [("convert_currency", {"amount": amount, "source": source, "target": target})]
    if "weather" in query.lower():
        _, sep, places = query.partition(" in ")
        if sep:
            return [("get_weather", {"city": city}) for city in _CITY.findall(places)]
    return []


def _call_id(messages: list[dict[str, Any]], index: int) -> str:
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
    return f"call_{digest[:20]}{index}"


def _answer(query: str, results: list[tuple[str, dict[str, Any], str]]) -> str:
    """One sentence from the tool results; the checked value comes last."""
    parts = []
    for name, arguments, content in results:
        try:
            value = json.loads(content)
        except json.JSONDecodeError:
            return f"Sorry, I could not get that: {content}"
        if not isinstance(value, dict):
            return f"Sorry, I could not get that: {content}"
        if name == "get_weather":
            parts.append(f"in {value['city']} it is {value['celsius']} degrees and {value['conditions']}")
        else:
            parts.append(f"{arguments['amount']} {arguments['source']} is {value['amount']} {value['currency']}")
    sentence = "; ".join(parts)
    return sentence[0].upper() + sentence[1:] + "."


def reply(messages: list[dict[str, Any]], tool_names: set[str]) -> dict[str, Any]:
    """The assistant message GPT-4o would send next: tool calls (no text) or a final answer."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        return {"content": "How can I help?"}
    query = _text(messages[last_user].get("content"))
    made: dict[str, tuple[str, dict[str, Any]]] = {}
    results: dict[str, str] = {}
    for message in messages[last_user + 1:]:
        for call in message.get("tool_calls") or []:
            try:
                arguments = json.loads(call["function"].get("arguments") or "{}")
            except json.JSONDecodeError:
                arguments = None
            made[call["id"]] = (call["function"]["name"], arguments)
        if message.get("role") == "tool":
            results[message.get("tool_call_id")] = _text(message.get("content"))
    wanted = [(name, args) for name, args in needed_calls(query) if name in tool_names]
    if not wanted:
        return {"content": "I can look up the weather in a city and convert between currencies."}
    answered = {(name, json.dumps(args, sort_keys=True)): results[call_id]
                for call_id, (name, args) in made.items() if call_id in results}
    if any(content.startswith("Error") for content in answered.values()):
        error = next(content for content in answered.values() if content.startswith("Error"))
        return {"content": f"Sorry, I could not get that: {error}"}
    missing = [(name, args) for name, args in wanted if (name, json.dumps(args, sort_keys=True)) not in answered]
    if missing:
        return {"content": None, "tool_calls": [
            {"id": _call_id(messages, i), "type": "function",
             "function": {"name": name, "arguments": json.dumps(args)}}
            for i, (name, args) in enumerate(missing)
        ]}
    ordered = [(name, args, answered[(name, json.dumps(args, sort_keys=True))]) for name, args in wanted]
    return {"content": _answer(query, ordered)}


def tool_teacher(request: RecordedRequest) -> dict[str, Any]:
    """A `ScriptedOpenAIServer` responder: every request gets GPT-4o's deterministic reply."""
    body = request.json or {}
    messages = body.get("messages") or []
    tool_names = {t["function"]["name"] for t in body.get("tools") or [] if t.get("type") == "function"}
    message = reply(messages, tool_names)
    n = int(body.get("n") or 1)
    prompt_tokens = len(json.dumps(messages)) // 4 + 1
    completion_tokens = len(json.dumps(message)) // 4 + 1
    choices = [choice(message["content"], tool_calls=message.get("tool_calls")) for _ in range(n)]
    return chat_completion(choices, model=MODEL, usage_=usage(prompt_tokens, completion_tokens))


if __name__ == "__main__":  # pragma: no cover - a manual aid
    import argparse
    import time

    from tests.wire.openai_server import ScriptedOpenAIServer

    parser = argparse.ArgumentParser(description="Serve the GPT-4o stand-in on 127.0.0.1 until interrupted.")
    parser.parse_args()
    with ScriptedOpenAIServer(responder=tool_teacher, models=("gpt-4o",)) as server:
        print(f"OPENAI_BASE_URL={server.base_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
