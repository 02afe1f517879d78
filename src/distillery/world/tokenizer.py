"""The world tokenizer: byte-level BPE trained on the world's own chat transcripts.

Digits are split one per token before BPE (copying a number digit by digit is far easier for a
tiny model than copying arbitrary multi-digit chunks), and the vocabulary stays small (about 1.5k).
It is saved as a Hugging Face `PreTrainedTokenizerFast` whose chat template is
`distillery.formats.hermes.HERMES_CHAT_TEMPLATE`, so `apply_chat_template(messages, tools=...)` renders
exactly as Qwen2.5 does and the HF provider's `<tool_call>` parser works unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from distillery.formats.hermes import EOS_TOKEN, HERMES_CHAT_TEMPLATE, PAD_TOKEN, SPECIAL_TOKENS, to_hf_messages, to_hf_tools
from distillery.trajectory import Trajectory

DEFAULT_VOCAB_SIZE = 1536


def _raw_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    # Four pre-tokenization rules, each for a reason:
    # - digits one per token, so numbers are copied digit by digit;
    # - an id's prefix ("SKU-", "ORD-") stands alone, so the token before an id's digits is the
    #   same in the question, in a tool call and in a tool result; merged into its JSON key
    #   ('sku": "SKU-') it differed, and copying the digits had no shared token to key on;
    # - capitalised words (product names, cities) stand alone, so "Paris" is the same token in
    #   the question, in a tool call and in a tool result, and copying it is one lookup;
    # - everything else may merge across spaces and punctuation (no GPT-2 regex), so the JSON and
    #   the fixed tool block, rendered into every prompt, shrink to a few long tokens.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Split(Regex(r"[A-Z]{2,}-"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"[A-Z][a-z]+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=None,
        unk_token=None,
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = HERMES_CHAT_TEMPLATE
    return wrapped


def render_trajectory(tokenizer: PreTrainedTokenizerFast, trajectory: Trajectory) -> str:
    """A whole trajectory as the chat template renders it (the text a model is trained on)."""
    return tokenizer.apply_chat_template(
        to_hf_messages(trajectory.messages()), tools=to_hf_tools(trajectory.tools), tokenize=False
    )


def train_tokenizer(trajectories: Iterable[Trajectory], vocab_size: int = DEFAULT_VOCAB_SIZE,
                    extra_texts: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Train the BPE on rendered transcripts of `trajectories` (and `extra_texts`) and wrap it for transformers."""
    # A byte-level tokenizer with no merges is enough to render the template's text.
    bootstrap = _wrap(_raw_tokenizer())
    bootstrap.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    corpus = [render_trajectory(bootstrap, t) for t in trajectories] + list(extra_texts)
    tokenizer = _raw_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return _wrap(tokenizer)


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> None:
    tokenizer.save_pretrained(str(directory))


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)


# How often each catalogue word is repeated in the extra corpus: enough for BPE to give every one a
# token of its own, whatever the transcripts' phrasing spends the other merges on.
CATALOGUE_REPEATS = 400


def catalogue_words() -> list[str]:
    """Every capitalised word the shop can put in a query or a tool result: name parts and cities."""
    from distillery.world.db import ADJECTIVES, CITIES, NOUNS

    return [*ADJECTIVES, *NOUNS, *CITIES]


def build_world_tokenizer(n_tasks: int = 4000, vocab_size: int = 1536, seed: int = 0) -> PreTrainedTokenizerFast:
    """Train the world tokenizer on expert transcripts of `n_tasks` train-split tasks (seeded).

    The catalogue's words (product-name parts, cities) are added to the corpus so that each is one
    token: a small model then copies a name or a city with one lookup. They are names, not facts:
    the words of a test product's name also occur in train products' names.
    """
    from distillery.world.expert import solve
    from distillery.world.tasks import generate_tasks

    words = " ".join(catalogue_words())
    return train_tokenizer((solve(task) for task in generate_tasks("train", n_tasks, seed=seed)), vocab_size,
                           extra_texts=[words] * CATALOGUE_REPEATS)
