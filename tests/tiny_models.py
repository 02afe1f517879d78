"""Tiny tokenizers and models for tests, built from configs: nothing is ever downloaded.

    tokenizer = tiny_tokenizer()                 # byte-level BPE, a few hundred tokens, Hermes chat template
    model = tiny_llama(tokenizer)                # a randomly initialised LlamaForCausalLM (~30k parameters)
    path = save_tiny_model(tmp_path / "m")       # both written to a directory, for `hf:<path>` URIs

The tokenizer speaks the same chat convention as the world tokenizer and a real Qwen2.5:
`<|im_start|>` / `<|im_end|>` (eos) / `<|endoftext|>` (pad) and `HERMES_CHAT_TEMPLATE`. It is
byte-level, so any text (JSON, unicode) encodes and decodes back exactly.

`train_tiny(model, tokenizer, texts)` fits a model to a handful of fixed strings in a few dozen
optimizer steps, which is enough to make generation deterministic and meaningful in tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from distillery.formats.hermes import EOS_TOKEN, HERMES_CHAT_TEMPLATE, PAD_TOKEN, SPECIAL_TOKENS

# Text the default tokenizer learns its merges from: the chat template's fixed wording plus the
# JSON and tool-call shapes tests produce, so prompts tokenize to a sensible number of tokens.
DEFAULT_CORPUS: tuple[str, ...] = (
    "You are a helpful assistant.",
    "# Tools\n\nYou may call one or more functions to assist with the user query.",
    "You are provided with function signatures within <tools></tools> XML tags:",
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:",
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>',
    "<tool_response>\n{\"temperature\": 21, \"unit\": \"celsius\"}\n</tool_response>",
    '{"type": "function", "function": {"name": "lookup", "description": "Look up a value.", '
    '"parameters": {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}}}',
    "What is the weather in Paris? The answer is 42. How many units are in stock in Berlin?",
    "system user assistant tool 0123456789 true false null",
)


def tiny_tokenizer(corpus: Iterable[str] | None = None, *, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in milliseconds on `corpus` (default: `DEFAULT_CORPUS`).

    The three chat special tokens get ids 0, 1, 2 (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`);
    the 256 byte symbols follow, then the learned merges, up to `vocab_size` in total. Training
    takes a few milliseconds, so every call returns a new object that tests may change freely.
    """
    texts = list(corpus) if corpus is not None else list(DEFAULT_CORPUS)
    backend = Tokenizer(models.BPE())
    # add_prefix_space=False: decode(encode(text)) must give back exactly `text`.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (EOS_TOKEN, PAD_TOKEN)],
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = HERMES_CHAT_TEMPLATE
    return tokenizer


def tiny_llama(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
    max_positions: int = 2048,
) -> LlamaForCausalLM:
    """A randomly initialised Llama sized to `tokenizer`, deterministic for a given `seed`, in eval mode."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def train_tiny(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str] | dict[str, str],
    *,
    steps: int = 120,
    lr: float = 1e-2,
    seed: int = 0,
) -> LlamaForCausalLM:
    """Fit `model` to `texts` (full-sequence next-token loss) and return it in eval mode.

    Pass a dict `{prompt: completion}` to train only on the completion tokens, so the model learns
    "after this prompt, write exactly that". The defaults (120 Adam steps at lr 1e-2) made a 30k-parameter
    model (seeds 0-2) write two ~20-token completions after ~300-token prompts with every token's
    logprob above -0.05, in 2-5 s on one busy CPU core. Higher learning rates were less reliable.
    """
    pairs = list(texts.items()) if isinstance(texts, dict) else [("", text) for text in texts]
    batch_ids, batch_labels = [], []
    for prompt, completion in pairs:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        batch_ids.append(prompt_ids + completion_ids)
        batch_labels.append([-100] * len(prompt_ids) + completion_ids)
    width = max(len(ids) for ids in batch_ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in batch_ids])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for lab in batch_labels])
    attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch_ids])

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    threads = torch.get_num_threads()
    # One intra-op thread: tiny matmuls gain nothing from more, and on a shared machine a
    # second thread waiting for a busy core slows every step down many times over.
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(steps):
                loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def save_tiny_model(
    path: str | Path,
    *,
    model: LlamaForCausalLM | None = None,
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> Path:
    """Write a tiny model and its tokenizer to `path` (created), loadable as `hf:<path>`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    model = model if model is not None else tiny_llama(tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
