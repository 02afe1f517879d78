"""Which generated tokens are the action, and what their logprobs say.

For a tool call the action tokens are the tool name and the argument JSON inside
`<tool_call>...</tool_call>` (the `{"name": "` scaffolding is excluded: it is near-certain and would
only dilute the statistics); for a final answer they are the answer text, without thinking
sections and special tokens. Token strings concatenate to the generated text, so spans found in
that text map back to tokens. `surely_rejected_by_min` applies the same spans to a generation
still under way (early escalation, `models/hf.py`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

from distillery.formats.hermes import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from distillery.errors import DistilleryError
from distillery.trajectory import Turn

SPECIAL_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|im_start|>", "</s>", "<eos>")


class NoActionLogprobs(DistilleryError):
    """A logprob scorer was asked to score a turn that carries no token logprobs for its action."""


# --------------------------------------------------------------------------------------------------
# Locating the action tokens
# --------------------------------------------------------------------------------------------------


def _tool_call_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of tool names and argument values inside `<tool_call>` blocks of `text`."""
    spans: list[tuple[int, int]] = []
    position = 0
    while (open_at := text.find(TOOL_CALL_OPEN, position)) >= 0:
        body_start = open_at + len(TOOL_CALL_OPEN)
        close_at = text.find(TOOL_CALL_CLOSE, body_start)
        body_end = close_at if close_at >= 0 else len(text)
        body = text[body_start:body_end]
        found = []
        name = re.search(r'"name"\s*:\s*"([^"]*)"', body)
        if name:
            found.append((body_start + name.start(1), body_start + name.end(1)))
        arguments = re.search(r'"arguments"\s*:\s*', body)
        if arguments:
            value_start = arguments.end()
            try:
                _, value_end = json.JSONDecoder().raw_decode(body, value_start)
            except json.JSONDecodeError:
                value_end = len(body.rstrip().rstrip("}"))  # broken JSON: take the rest of the block
            found.append((body_start + value_start, body_start + max(value_end, value_start)))
        if not found and body.strip():
            # No recognisable name/arguments: the whole (malformed) block is the action.
            found.append((body_start, body_end))
        spans.extend(found)
        position = body_end + len(TOOL_CALL_CLOSE) if close_at >= 0 else len(text)
    return spans


def _settled_tool_call_spans(text: str) -> list[tuple[int, int]]:
    """The action spans of a *partial* generation that no continuation can change.

    Inside each `<tool_call>` block seen so far: the name once its closing quote is written (the
    leftmost match is fixed from then on), and the arguments once their JSON value is complete.
    These are exactly spans `_tool_call_spans` will find in the final text, whatever follows.
    """
    spans: list[tuple[int, int]] = []
    position = 0
    while (open_at := text.find(TOOL_CALL_OPEN, position)) >= 0:
        body_start = open_at + len(TOOL_CALL_OPEN)
        close_at = text.find(TOOL_CALL_CLOSE, body_start)
        body = text[body_start:close_at if close_at >= 0 else len(text)]
        name = re.search(r'"name"\s*:\s*"([^"]*)"', body)
        if name:
            spans.append((body_start + name.start(1), body_start + name.end(1)))
        arguments = re.search(r'"arguments"\s*:\s*', body)
        # The value's start is settled once a non-space character follows the colon.
        if arguments and arguments.end() < len(body):
            try:
                _, value_end = json.JSONDecoder().raw_decode(body, arguments.end())
            except json.JSONDecodeError:
                pass  # not complete yet (or broken, which the validity gate rejects anyway)
            else:
                spans.append((body_start + arguments.end(), body_start + value_end))
        if close_at < 0:
            break
        position = close_at + len(TOOL_CALL_CLOSE)
    return spans


def surely_rejected_by_min(pieces: Sequence[str], logprobs: Sequence[float], threshold: float) -> bool:
    """True when a partial generation can no longer pass a min-logprob scorer at `threshold`.

    `pieces[i]` is token i's text (they concatenate to the text so far) and `logprobs[i]` its
    temperature-1 logprob. If a token that surely belongs to the final action is already below
    log(threshold), the final min is too; and if the action ends up invalid it scores 0. Either
    way the proposal is rejected, so generation can stop: the decision is the one full generation
    would have reached (`tests/test_early_escalation.py`).
    """
    if threshold <= 0:
        return False
    text = "".join(pieces)
    spans = _settled_tool_call_spans(text) if TOOL_CALL_OPEN in text else []
    if not spans:
        return False
    bound = math.log(threshold)
    offset = 0
    for piece, logprob in zip(pieces, logprobs):
        start, end = offset, offset + len(piece)
        offset = end
        if logprob < bound and end > start and any(start < s_end and end > s_start for s_start, s_end in spans):
            return True
    return False


def _answer_span(text: str) -> list[tuple[int, int]]:
    """The span of a final answer: the text without thinking sections, special tokens and outer whitespace."""
    visible_end = len(text)
    for special in SPECIAL_TOKENS:
        at = text.find(special)
        if at >= 0:
            visible_end = min(visible_end, at)
    start = 0
    think_close = text.rfind("</think>", 0, visible_end)
    if think_close >= 0:
        start = think_close + len("</think>")
    while start < visible_end and text[start].isspace():
        start += 1
    end = visible_end
    while end > start and text[end - 1].isspace():
        end -= 1
    return [(start, end)] if end > start else []


def action_token_logprobs(turn: Turn) -> list[float]:
    """Logprobs of the tokens that make up the turn's action (tool name + arguments, or the answer).

    Token strings concatenate to the generated text, so spans found in that concatenation map back
    to tokens: a token belongs to the action when it overlaps an action span. Raises
    `NoActionLogprobs` when the turn has no logprobs, or none of them cover its action (hosted
    providers return logprobs for message text only, not for structured tool calls).
    """
    if not turn.logprobs:
        raise NoActionLogprobs(
            f"model {turn.model or '?'} returned no token logprobs; logprob scorers need them "
            "(use scorer 'agreement:k' or a model/provider that returns logprobs)"
        )
    text = "".join(t.token for t in turn.logprobs)
    spans = _tool_call_spans(text) if TOOL_CALL_OPEN in text else []
    if not spans and turn.tool_calls:
        raise NoActionLogprobs(
            f"model {turn.model or '?'} made a tool call but its logprobs do not cover the call's tokens "
            "(hosted APIs give logprobs for message text only); use scorer 'agreement:k' for this model"
        )
    if not spans:
        spans = _answer_span(text)
    selected: list[float] = []
    offset = 0
    for token in turn.logprobs:
        token_start, token_end = offset, offset + len(token.token)
        offset = token_end
        if token_end > token_start and any(token_start < end and token_end > start for start, end in spans):
            selected.append(token.logprob)
    if not selected:
        raise NoActionLogprobs(f"model {turn.model or '?'}: no logprobs fall on the action tokens")
    return selected


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), without needing numpy for a short list."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def logprob_features(turn: Turn) -> dict[str, float]:
    """Statistics of the action-token logprobs: min, mean and quantiles (as logprobs) and the count."""
    values = action_token_logprobs(turn)
    return {
        "lp_min": min(values),
        "lp_mean": sum(values) / len(values),
        "lp_q10": quantile(values, 0.10),
        "lp_q25": quantile(values, 0.25),
        "lp_q50": quantile(values, 0.50),
        "n_action_tokens": float(len(values)),
    }
