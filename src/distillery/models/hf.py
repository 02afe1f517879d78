"""Local chat models through Hugging Face transformers: `hf:<directory>`.

    model = load_model("hf:./checkpoints/student")      # a directory with config.json + tokenizer
    turns = model.generate(messages, tools, logprobs=True, top_logprobs=5)

One code path serves the bundled world models and a real Qwen checkpoint: the prompt is the
tokenizer's own chat template (`apply_chat_template(messages, tools=...)`, Hermes/Qwen
convention), and tool calls are parsed back out of `<tool_call>{json}</tool_call>` blocks by
`hermes.parse_tool_calls`.

Logprobs are always those of the model's own temperature-1 distribution (log_softmax of the raw
logits), whatever temperature was used to sample, and each token's `.token` is the exact slice of
the generated text it produced, so `"".join(t.token for t in turn.logprobs)` is the raw text the
model wrote (tool-call markup included, the end-of-turn token excluded).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteriaList

from distillery import chat_tokens
from distillery.errors import ConfigError, ModelError
from distillery.formats import hermes
from distillery.models.base import SyncChatModel
from distillery.models.hf_generation import (  # noqa: F401  (_split_thinking: tests import it from here)
    _check_arguments,
    _EarlyReject,
    _seeded,
    _split_thinking,
    _threads,
    _tools_per_conversation,
)
from distillery.models.hf_loading import _load_model, _load_tokenizer, _model_dir, _stop_token_ids
from distillery.pricing import cost_usd, note_parameter_count
from distillery.trajectory import (
    Message,
    StopReason,
    TokenLogprob,
    ToolSpec,
    TopLogprob,
    Turn,
    Usage,
)

# Keyword options forwarded to transformers' `generate` (sampling filters, and min_new_tokens for
# benchmarks that need fixed-length outputs). Anything else in **options is ignored, so one
# `generate_options` dict can drive a cascade of different providers.
GENERATION_OPTIONS = ("top_p", "top_k", "min_p", "repetition_penalty", "min_new_tokens")

# Below this many parameters a model runs on one intra-op thread unless `num_threads` says otherwise.
SMALL_MODEL_PARAMS = 50_000_000

# Tokens of left context when decoding one token's text (see `HFModel.token_pieces`).
_DECODE_CONTEXT = 4


class HFModel(SyncChatModel):
    """A causal LM and its tokenizer, speaking the `ChatModel` protocol.

    Give a local directory (loaded with `local_files_only=True`: nothing is downloaded), or an
    already-built `model` and `tokenizer` (a model you pass is used as it is: on its own device, in
    whatever train/eval mode you left it). `uri` defaults to `hf:<name_or_path>`; it names the model
    in trajectories and picks its price: a price-table entry for the URI if there is one, otherwise
    the self-hosting estimate for the model's parameter count (`pricing.self_hosted_price`).

    `num_threads` caps torch's intra-op threads while this model runs (the previous setting is
    restored after each call). The default, None, uses 1 thread for models under
    `SMALL_MODEL_PARAMS` parameters and leaves torch alone otherwise: a few-million-parameter
    model's matmuls are too small to split, and on a busy machine a second thread that waits for
    a core made generation an order of magnitude slower (see BENCHMARKS.md). 0 leaves torch alone.

    `chat_template_kwargs` are extra variables for the chat template, e.g. `{"enable_thinking":
    False}` for Qwen3.
    """

    supports_early_reject = True  # generate(early_reject=threshold): see _EarlyReject

    def __init__(
        self,
        name_or_path: str | Path,
        *,
        model: Any = None,
        tokenizer: Any = None,
        device: str = "cpu",
        dtype: str | torch.dtype | None = None,
        max_new_tokens: int = 256,
        uri: str | None = None,
        num_threads: int | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
    ):
        self.name_or_path = str(name_or_path)
        self.uri = uri or f"hf:{self.name_or_path}"
        self.max_new_tokens = max_new_tokens
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        if model is None or tokenizer is None:
            path = _model_dir(self.name_or_path)
            if tokenizer is None:
                tokenizer = _load_tokenizer(path)
            if model is None:
                model = _load_model(path, device=device, dtype=dtype)
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"{self.uri}: the tokenizer has no chat_template; hf: models need one "
                "(set tokenizer.chat_template, e.g. distillery.formats.hermes.HERMES_CHAT_TEMPLATE)"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.stop_token_ids = _stop_token_ids(model, tokenizer)
        if not self.stop_token_ids:
            raise ConfigError(f"{self.uri}: the tokenizer has no eos_token; set it to the end-of-turn token")
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else min(self.stop_token_ids)
        self.context_length = getattr(model.config, "max_position_embeddings", None)
        # A local model is priced by its size (pricing.self_hosted_price); remembered for evaluation.
        self.n_params = sum(p.numel() for p in model.parameters())
        note_parameter_count(self.uri, self.n_params)
        if num_threads is None:
            num_threads = 1 if self.n_params < SMALL_MODEL_PARAMS else None
        self.num_threads = num_threads if num_threads and num_threads > 0 else None  # 0: leave torch alone
        # One generation at a time per model: concurrent calls (agenerate runs in worker threads)
        # would only fight over the same CPU cores, and a lock keeps the model's state simple.
        self._lock = threading.Lock()
        self._piece_cache: dict[int, str] = {}

    def __repr__(self) -> str:
        return f"HFModel({self.uri!r})"

    # ------------------------------------------------------------------ prompts

    def render_prompt(self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None = None) -> str:
        """The prompt text exactly as the chat template renders it, ending with the assistant header."""
        return self.tokenizer.apply_chat_template(
            hermes.to_hf_messages(list(messages)),
            tools=hermes.to_hf_tools(list(tools) if tools else None),
            add_generation_prompt=True,
            tokenize=False,
            **self.chat_template_kwargs,
        )

    def render_completion(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None, reply: Message | Turn
    ) -> str:
        """The raw text this model would have written for `reply` (e.g. another model's proposal).

        It is what the chat template renders for that assistant message after the prompt, without
        the end-of-turn token: the string to pass to `sequence_logprobs` to score the proposal.
        """
        if isinstance(reply, Turn):
            reply = Message(role="assistant", content=reply.text, tool_calls=list(reply.tool_calls))
        prompt = self.render_prompt(messages, tools)
        full = self.tokenizer.apply_chat_template(
            hermes.to_hf_messages([*messages, reply]),
            tools=hermes.to_hf_tools(list(tools) if tools else None),
            add_generation_prompt=False,
            tokenize=False,
            **self.chat_template_kwargs,
        )
        if not full.startswith(prompt):
            raise ModelError(f"{self.uri}: the chat template does not render an assistant reply after its prompt")
        completion = full[len(prompt) :]
        eos = self.tokenizer.eos_token or ""
        end = completion.rfind(eos) if eos else -1
        return completion[:end] if end >= 0 else completion

    def encode(self, text: str) -> list[int]:
        # The one encoding training uses too (`chat_tokens`), so prompts match training tokens.
        return chat_tokens.encode(self.tokenizer, text)

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        messages: list[Message],
        tools: list[ToolSpec] | None = None,
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        seed: int | None = None,
        **options: Any,
    ) -> list[Turn]:
        """`n` alternative assistant turns: greedy when `temperature == 0`, sampled otherwise.

        `seed` makes sampling reproducible without touching the global RNG. With `logprobs=True`
        each turn carries one `TokenLogprob` per generated token (end-of-turn token excluded), from
        the model's temperature-1 distribution, with `top_logprobs` alternatives when > 0.
        Options named in `GENERATION_OPTIONS` (top_p, top_k, ...) go to transformers; others are ignored.
        """
        [turns] = self.generate_many(
            [messages],
            tools,
            n=n,
            temperature=temperature,
            max_tokens=max_tokens,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            seed=seed,
            **options,
        )
        return turns

    def generate_many(
        self,
        conversations: Sequence[Sequence[Message]],
        tools: Sequence[ToolSpec] | Sequence[Sequence[ToolSpec] | None] | None = None,
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        seed: int | None = None,
        **options: Any,
    ) -> list[list[Turn]]:
        """`generate` for several conversations in one left-padded batch: one list of `n` turns each.

        `tools` is one tool list for every conversation, or one list (or None) per conversation.
        A small model spends most of each decoding step in Python overhead, so a batch of B
        conversations costs far less than B calls (see BENCHMARKS.md). Every turn's `latency_s` is
        the whole batch's wall time: that is how long each of them waited.
        """
        _check_arguments(n=n, temperature=temperature, top_logprobs=top_logprobs, max_tokens=max_tokens)
        if not conversations:
            return []
        started = time.perf_counter()
        per_conversation_tools = _tools_per_conversation(tools, len(conversations))
        prompts = [
            self.encode(self.render_prompt(messages, conversation_tools))
            for messages, conversation_tools in zip(conversations, per_conversation_tools)
        ]
        width = max(len(ids) for ids in prompts)
        max_new = self._max_new_tokens(width, max_tokens)
        sampling = temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "do_sample": sampling,
            # Pure temperature sampling by default: samples then follow the model's own distribution
            # (what action-distribution estimates need), not a checkpoint's top-k/top-p defaults.
            "temperature": temperature if sampling else None,
            "top_k": 0 if sampling else None,
            "top_p": 1.0 if sampling else None,
            "repetition_penalty": None,
            # Greedy decoding gives n identical turns: decode once and copy (transformers refuses
            # num_return_sequences > 1 without sampling).
            "num_return_sequences": n if sampling else 1,
            "eos_token_id": sorted(self.stop_token_ids),
            "pad_token_id": self.pad_token_id,
            "use_cache": True,
            "return_dict_in_generate": True,
            "output_logits": logprobs,
        }
        kwargs.update({k: v for k, v in options.items() if k in GENERATION_OPTIONS})
        early = None
        if options.get("early_reject") is not None and not sampling and not any(k in options for k in GENERATION_OPTIONS):
            # Stop a proposal as soon as a min-logprob scorer must reject it. Greedy, with no logits
            # processor asked for, so the scores a stopping criterion sees are the raw logits.
            early = _EarlyReject(self, float(options["early_reject"]), width)
            kwargs["stopping_criteria"] = StoppingCriteriaList([early])
            kwargs["output_scores"] = True

        # Left padding, so every row's next token comes from the last position; transformers
        # derives position ids from the attention mask, so padding does not shift positions.
        device = self.model.device
        input_ids = torch.tensor(
            [[self.pad_token_id] * (width - len(ids)) + ids for ids in prompts], dtype=torch.long, device=device
        )
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
        # The logprob arithmetic after generation runs under the same thread cap: a top-k over a
        # small table on two contended threads cost more than the whole forward pass.
        with torch.inference_mode(), _threads(self.num_threads):
            with self._lock, _seeded(seed, device):
                out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            sequences = out.sequences[:, width:].tolist()
            # (rows, steps, vocab) raw logits; row r is conversation r // n (num_return_sequences
            # repeats each prompt n times in place).
            step_logits = torch.stack(out.logits, dim=1) if logprobs else None
            latency = time.perf_counter() - started

            results = []
            samples_per_prompt = n if sampling else 1
            for index, prompt in enumerate(prompts):
                turns = []
                for sample in range(n):
                    row = index * samples_per_prompt + (sample if sampling else 0)
                    turns.append(
                        self._turn(
                            sequences[row],
                            None if step_logits is None else step_logits[row],
                            prompt_tokens=len(prompt),
                            top_logprobs=top_logprobs,
                            latency=latency,
                            stopped_at=early.stopped.get(row) if early is not None else None,
                        )
                    )
                results.append(turns)
        return results

    def _turn(
        self,
        generated: list[int],
        step_logits: torch.Tensor | None,
        *,
        prompt_tokens: int,
        top_logprobs: int,
        latency: float,
        stopped_at: int | None = None,
    ) -> Turn:
        if stopped_at is not None:  # rejected early: a batch pads the row after that step, cut there
            generated = generated[:stopped_at]
        stop_at = next((i for i, token in enumerate(generated) if token in self.stop_token_ids), None)
        finished = stop_at is not None
        tokens = generated[:stop_at] if finished else generated
        text = self.tokenizer.decode(tokens, skip_special_tokens=False)

        token_logprobs = None
        if step_logits is not None:
            pieces = self.token_pieces(tokens, text)
            rows = step_logits[: len(tokens)].float().log_softmax(-1)  # temperature 1, before any warper
            token_logprobs = self._token_logprobs(tokens, pieces, rows, top_logprobs)

        thinking, visible = _split_thinking(text)
        content, calls = hermes.parse_tool_calls(visible, id_prefix=f"call_{uuid.uuid4().hex[:16]}_")
        stop_reason: StopReason = (
            "early_reject" if stopped_at is not None and not finished
            else "max_tokens" if not finished else ("tool_use" if calls else "end_turn")
        )
        # The end-of-turn token was generated (and would be billed by a hosted API), so it counts.
        usage = Usage(input_tokens=prompt_tokens, output_tokens=len(tokens) + (1 if finished else 0))
        return Turn(
            text=content,
            thinking=thinking,
            tool_calls=calls,
            stop_reason=stop_reason,
            logprobs=token_logprobs,
            usage=usage,
            model=self.uri,
            latency_s=latency,
            cost_usd=cost_usd(self.uri, usage, n_params=self.n_params),
        )

    def _max_new_tokens(self, prompt_tokens: int, max_tokens: int | None) -> int:
        limit = self.max_new_tokens if max_tokens is None else max_tokens
        if self.context_length:
            room = self.context_length - prompt_tokens
            if room <= 0:
                raise ModelError(
                    f"{self.uri}: the prompt is {prompt_tokens} tokens, the model's context is {self.context_length}"
                )
            limit = min(limit, room)
        return limit

    # ------------------------------------------------------------------ logprobs

    def token_pieces(self, token_ids: Sequence[int], text: str | None = None) -> list[str]:
        """The slice of the decoded text each token produced; the pieces concatenate to the text.

        A character split over several byte-level tokens (non-ASCII text) belongs to the token
        that completes it; the earlier tokens of that character get "". Each token is decoded in
        a short window with a few tokens of left context, so the cost grows linearly with length
        and tokenizers that drop a leading space at the start of a decode (SentencePiece) still
        give each token its space. If the window pieces ever disagree with `text`, every prefix is
        decoded from the start instead, which is exact but quadratic.
        """
        ids = list(token_ids)
        decode = self._decode
        text = decode(ids) if text is None else text
        pieces: list[str] = []
        # The text of ids[context:done] is already emitted; ids[done:] still owe their text.
        context = done = 0
        for end in range(1, len(ids) + 1):
            before = decode(ids[context:done])
            after = decode(ids[context:end])
            if len(after) > len(before) and not after.endswith("\ufffd") and after.startswith(before):
                pieces.append(after[len(before) :])
                context, done = max(0, end - _DECODE_CONTEXT), end
            else:
                pieces.append("")  # an unfinished character: it lands on a later token
        emitted = "".join(pieces)
        if pieces and text.startswith(emitted):
            pieces[-1] += text[len(emitted) :]  # bytes that never completed a character, shown as U+FFFD
            return pieces
        return self._prefix_pieces(ids, text) if ids else []

    def _prefix_pieces(self, ids: list[int], text: str) -> list[str]:
        pieces: list[str] = []
        emitted = 0
        for end in range(1, len(ids)):
            prefix = self._decode(ids[:end])
            if prefix.endswith("\ufffd") or not text.startswith(prefix) or len(prefix) < emitted:
                pieces.append("")
                continue
            pieces.append(prefix[emitted:])
            emitted = len(prefix)
        if ids:
            pieces.append(text[emitted:])
        return pieces

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False) if ids else ""

    def _token_logprobs(
        self, tokens: list[int], pieces: list[str], rows: torch.Tensor, top_logprobs: int
    ) -> list[TokenLogprob]:
        if not tokens:
            return []
        index = torch.tensor(tokens, device=rows.device)
        chosen = rows.gather(-1, index[:, None]).squeeze(-1).tolist()
        top_values = top_ids = None
        if top_logprobs > 0:
            k = min(top_logprobs, rows.shape[-1])
            top = rows.topk(k, dim=-1)  # sorted, most likely first
            top_values, top_ids = top.values.tolist(), top.indices.tolist()
        out = []
        for i, (token_id, piece, logprob) in enumerate(zip(tokens, pieces, chosen)):
            alternatives = []
            if top_ids is not None:
                alternatives = [
                    TopLogprob(token=self._piece(alt), logprob=value, token_id=alt)
                    for alt, value in zip(top_ids[i], top_values[i])
                ]
            out.append(TokenLogprob(token=piece, logprob=logprob, token_id=token_id, top=alternatives))
        return out

    def _piece(self, token_id: int) -> str:
        """One token decoded on its own (alternatives have no context; a partial character shows as U+FFFD)."""
        piece = self._piece_cache.get(token_id)
        if piece is None:
            piece = self._piece_cache[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return piece

    def sequence_logprobs(
        self,
        messages: list[Message],
        tools: list[ToolSpec] | None,
        completions: Sequence[str | Sequence[int]],
        *,
        top_logprobs: int = 0,
        include_end: bool = False,
    ) -> list[list[TokenLogprob]]:
        """Teacher-forced logprobs of given assistant continuations of this conversation.

        Each completion is raw assistant text as this model would write it (use `render_completion`
        for another model's turn) or a list of token ids (scores exactly those tokens, e.g. what a
        sampler produced). With `include_end=True` the end-of-turn token is scored too: the
        probability that the turn stops there. All completions go through one batched forward pass.
        """
        if not completions:
            return []
        prompt_ids = self.encode(self.render_prompt(messages, tools))
        end_id = self.tokenizer.eos_token_id
        targets: list[list[int]] = []
        for completion in completions:
            ids = self.encode(completion) if isinstance(completion, str) else [int(t) for t in completion]
            targets.append(ids + [end_id] if include_end else ids)
        width = max(len(ids) for ids in targets)
        if width == 0:
            return [[] for _ in targets]
        if self.context_length and len(prompt_ids) + width > self.context_length:
            raise ModelError(
                f"{self.uri}: prompt plus completion is {len(prompt_ids) + width} tokens, "
                f"the model's context is {self.context_length}"
            )
        # Right padding: a causal model's logits at real positions never see the padding.
        rows = [prompt_ids + ids + [self.pad_token_id] * (width - len(ids)) for ids in targets]
        mask = [[1] * (len(prompt_ids) + len(ids)) + [0] * (width - len(ids)) for ids in targets]
        device = self.model.device
        with torch.inference_mode(), _threads(self.num_threads):
            with self._lock:
                logits = self.model(
                    input_ids=torch.tensor(rows, device=device),
                    attention_mask=torch.tensor(mask, device=device),
                    # Only positions that predict a completion token: the last `width` + 1 prompt one.
                    logits_to_keep=width + 1,
                    use_cache=False,
                ).logits
            # Position j of `logits` predicts completion token j (the last position predicts nothing).
            table = logits[:, :width].float().log_softmax(-1)
            results = []
            for i, ids in enumerate(targets):
                scored = ids[:-1] if include_end else ids
                text = self.tokenizer.decode(scored, skip_special_tokens=False)
                pieces = self.token_pieces(scored, text) + ([self.tokenizer.eos_token] if include_end else [])
                results.append(self._token_logprobs(ids, pieces, table[i, : len(ids)], top_logprobs))
        return results


__all__ = ["HFModel", "GENERATION_OPTIONS", "SMALL_MODEL_PARAMS"]
