"""The travel assistant: a tool loop on the official openai SDK.

    python agent.py "What's the weather in Paris and Tokyo?"

The client takes its settings from the environment, as the SDK always does: OPENAI_API_KEY, and
OPENAI_BASE_URL when set. So the same file talks to GPT-4o or to the distillery gateway:

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 python agent.py "What's the weather in Paris?"
"""

import json
import sys
from pathlib import Path

from openai import OpenAI

from my_tools import TOOLS

SYSTEM = Path(__file__).with_name("system.txt").read_text().strip()
# The schemas the model sees, built from the @tool functions: the teacher saw exactly these while
# collecting, so the student was trained on them too.
SCHEMAS = [{"type": "function", "function": t.spec.model_dump()} for t in TOOLS]
BY_NAME = {t.name: t for t in TOOLS}


def call_tool(name: str, arguments: str) -> str:
    try:
        return json.dumps(BY_NAME[name](**json.loads(arguments)))
    except Exception as exc:  # the model reads the error and can recover
        return f"Error: {type(exc).__name__}: {exc}"


def run(query: str, client: OpenAI, model: str = "gpt-4o", max_steps: int = 6) -> str:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": query}]
    for _ in range(max_steps):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, tools=SCHEMAS)
        message = raw.parse().choices[0].message
        who = raw.headers.get("x-distillery-tier", model)  # the gateway says which tier answered
        if not message.tool_calls:
            print(f"[{who}] {message.content}")
            return message.content
        messages.append({"role": "assistant", "content": message.content,
                         "tool_calls": [call.model_dump() for call in message.tool_calls]})
        for call in message.tool_calls:
            result = call_tool(call.function.name, call.function.arguments)
            print(f"[{who}] {call.function.name}({call.function.arguments}) -> {result}")
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    raise RuntimeError(f"no answer after {max_steps} steps")


if __name__ == "__main__":
    run(" ".join(sys.argv[1:]) or "What's the weather in Paris?", OpenAI())
