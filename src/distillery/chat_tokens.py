"""How a conversation becomes training tokens: exactly the tokens the model continues at inference.

At inference a local model is given `encode(render(messages[:k], add_generation_prompt=True))`
and writes assistant turn k after it. Tokenizing the whole conversation at once gives different
tokens wherever a BPE merge crosses a turn boundary: with a byte-level tokenizer that lets merges
cross newlines (the world tokenizer, many custom ones), an assistant turn that starts directly
with `<tool_call>` (GPT-4o's habit) merges the prompt's trailing `"\\n"` into one token with the
call. A student trained on that sequence is asked, at inference, for a continuation it never saw.

So each assistant turn is tokenized the way inference does it: the rendered prompt alone, then
the completion (the turn's text up to and including the end-of-turn token) on its own, as the model
would generate it. Turns share one training sequence while each turn's inference prompt is a
prefix of it; where the history re-tokenizes differently (the merge above, or a template that drops
earlier reasoning), the conversation is split into several sequences ("pieces"), each trained only
on its own turns, in exactly the context inference gives them. `check_prefix_property` verifies
the result independently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from distillery.errors import ConfigError


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered chat text, as inference encodes a prompt.

    Chat templates write their own special tokens, so the tokenizer must not add a BOS.
    """
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _tools(tools: Any) -> list[dict[str, Any]] | None:
    if isinstance(tools, str):
        tools = json.loads(tools) if tools.strip() else None
    return tools or None


def render(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None, *,
           add_generation_prompt: bool = False, **template_kwargs: Any) -> str:
    """The chat template's text for `messages` (dicts as `apply_chat_template` takes them)."""
    return tokenizer.apply_chat_template(
        messages, tools=_tools(tools), add_generation_prompt=add_generation_prompt, tokenize=False,
        **template_kwargs,
    )


def completion_text(tokenizer: Any, messages: list[dict[str, Any]], index: int, tools: Any = None,
                    **template_kwargs: Any) -> tuple[str, str]:
    """(prompt, completion) for the assistant message at `index`.

    The prompt is what inference renders before the turn; the completion is what the model writes:
    the template's text for the turn, up to and including the end-of-turn token (what follows it,
    such as a newline, belongs to the next prompt).
    """
    prompt = render(tokenizer, messages[:index], tools, add_generation_prompt=True, **template_kwargs)
    full = render(tokenizer, messages[: index + 1], tools, **template_kwargs)
    if not full.startswith(prompt):
        raise ConfigError(
            f"assistant turn {index}: the chat template renders this turn's history differently from its "
            "inference prompt, so no training sequence can match inference"
        )
    completion = full[len(prompt):]
    eos = tokenizer.eos_token or ""
    end = completion.rfind(eos) if eos else -1
    return prompt, completion[: end + len(eos)] if end >= 0 else completion


@dataclass
class Piece:
    """One training sequence: its tokens, which of them carry the loss, and which turns they are."""

    input_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)  # 1 on the assistant tokens trained here
    turns: list[int] = field(default_factory=list)  # message indices of those assistant turns

    def labels(self) -> list[int]:
        return [token if keep else -100 for token, keep in zip(self.input_ids, self.loss_mask)]


def tokenize_conversation(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None,
                          **template_kwargs: Any) -> list[Piece]:
    """The training pieces of one conversation, every assistant turn trained (see the module docstring)."""
    pieces: list[Piece] = []
    current = Piece()
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        prompt, completion = completion_text(tokenizer, messages, index, tools, **template_kwargs)
        prompt_ids = encode(tokenizer, prompt)
        if prompt_ids[: len(current.input_ids)] != current.input_ids:
            # The history re-tokenizes differently from what this sequence holds: start a new one.
            pieces.append(current)
            current = Piece()
        new = len(prompt_ids) - len(current.input_ids)
        current.input_ids = prompt_ids
        current.loss_mask = current.loss_mask + [0] * new
        completion_ids = encode(tokenizer, completion)
        current.input_ids = current.input_ids + completion_ids
        current.loss_mask = current.loss_mask + [1] * len(completion_ids)
        current.turns.append(index)
    pieces.append(current)
    return [piece for piece in pieces if piece.turns]


def trained_spans(mask: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of 1s in a loss mask: one per trained turn."""
    spans, start = [], None
    for position, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = position
        elif not bit and start is not None:
            spans.append((start, position))
            start = None
    return spans


def prefix_violation(tokenizer: Any, messages: list[dict[str, Any]], tools: Any, input_ids: list[int],
                     labels: list[int], turns: list[int], **template_kwargs: Any) -> str | None:
    """Why this training sequence breaks the prefix property, or None when it holds.

    For each trained turn, the tokens before it must be exactly the inference prompt's tokens, and
    the trained tokens must be the completion's. Spans cut off by truncation are checked as far as
    they go.
    """
    spans = trained_spans([int(label != -100) for label in labels])
    if len(spans) > len(turns):
        return f"{len(spans)} trained spans for {len(turns)} assistant turns"
    for (start, end), turn in zip(spans, turns):
        prompt, completion = completion_text(tokenizer, messages, turn, tools, **template_kwargs)
        prompt_ids = encode(tokenizer, prompt)
        if input_ids[:start] != prompt_ids:
            return (f"assistant turn {turn}: the inference prompt ({len(prompt_ids)} tokens) is not the "
                    f"{start} tokens before the trained span")
        if input_ids[start:end] != encode(tokenizer, completion)[: end - start]:
            return f"assistant turn {turn}: the trained tokens are not the completion as the model writes it"
    return None


def check_prefix_property(tokenizer: Any, rows: list[dict[str, Any]], sequences: list[dict[str, Any]], *,
                          names: list[str] | None = None, **template_kwargs: Any) -> None:
    """Raise `ConfigError` naming the first training sequence whose trained tokens do not follow
    their inference prompt exactly.

    `rows` are the source conversations (`messages`, `tools`); each of `sequences` has `input_ids`,
    `labels`, `source_row` and `turns` (as `tokenize_rows` writes them). `names` says where each
    row came from (default "training example N").
    """
    for number, sequence in enumerate(sequences):
        row = rows[sequence["source_row"]]
        problem = prefix_violation(tokenizer, row["messages"], row.get("tools"), list(sequence["input_ids"]),
                                   list(sequence["labels"]), list(sequence["turns"]), **template_kwargs)
        if problem:
            source = sequence["source_row"]
            name = names[source] if names is not None else f"training example {source}"
            raise ConfigError(
                f"{name} (sequence {number}): {problem}; the student would be trained on tokens it is never "
                "asked to continue at inference"
            )


def tokenize_rows(tokenizer: Any, rows: list[dict[str, Any]], *, names: list[str] | None = None,
                  **template_kwargs: Any) -> list[dict[str, Any]]:
    """Training sequences for chat rows (`messages` with JSON-string arguments, `tools`): `input_ids`,
    `labels` (-100 off the trained turns), `source_row` and `turns`, in row order. `names` says
    where each row came from, for errors (default "training example N")."""
    out = []
    for number, row in enumerate(rows):
        messages = [template_message(m) for m in row["messages"]]
        try:
            pieces = tokenize_conversation(tokenizer, messages, row.get("tools"), **template_kwargs)
        except ConfigError as exc:
            name = names[number] if names is not None else f"training example {number}"
            raise ConfigError(f"{name}: {exc}") from None
        for piece in pieces:
            out.append({"input_ids": piece.input_ids, "labels": piece.labels(), "source_row": number,
                        "turns": piece.turns})
    return out


def template_message(message: dict[str, Any]) -> dict[str, Any]:
    """A stored chat message without the keys Arrow pads in (None), as templates expect."""
    return {key: value for key, value in message.items() if value is not None}
