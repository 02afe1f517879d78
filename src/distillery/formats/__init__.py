"""One wire format per vendor, both directions, and the only place messages are converted.

* `openai`: Chat Completions: requests and responses for `models/openai.py` and the gateway's
  `/v1/chat/completions`, and OpenAI's fine-tuning JSONL for `dataset/`.
* `anthropic`: the Messages API, for `models/anthropic.py` and the gateway's `/v1/messages`.
* `hermes`: the Hermes/Qwen chat-template convention local models use (`<tool_call>` blocks in
  the assistant text), for `models/hf.py`, `dataset/` and the trainer.

Each converts our `Message`, `ToolCall`, `ToolSpec` and stop reasons to the vendor's dicts and back.
A request that breaks the vendor's rules raises `WireFormatError`, naming the field.
"""

from typing import Any

from distillery.errors import DistilleryError


class WireFormatError(DistilleryError):
    """A vendor-format payload that cannot be read; `param` names the offending field."""

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.param = param


def joined_text(content: Any, where: str, *, kinds: tuple[str, ...], sep: str, what: str) -> str:
    """Text from a string, null, or a list of parts whose type is one of `kinds`, joined by `sep`.

    Both vendors accept these three spellings of text content; anything else (an image, a document)
    is refused by name, since our messages hold text only. `what` names the content in the error.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise WireFormatError(f"{where}: {what} must be a string or a list of text parts", param=where)
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in kinds:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise WireFormatError(f"{where}[{i}]: {what} of type {kind!r} is not supported; send text",
                                  param=f"{where}[{i}]")
        texts.append(str(part.get("text", part.get("refusal", ""))))
    return sep.join(texts)
