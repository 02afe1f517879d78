"""The dataset builder: trajectories in the store become fine-tuning data that services accept.

    from distillery.dataset import build_finetune_jsonl, DatasetBuilder

    build_finetune_jsonl(trajectories, "train.jsonl")                     # OpenAI chat fine-tuning JSONL
    build_finetune_jsonl(trajectories, "train.jsonl", format="hf")        # messages + tools, for TRL
    DatasetBuilder(format="parquet", success_only=True, split=(0.8, 0.1, 0.1)).build(items, "data/")

Modules: `render` (reasoning policy, weights, wire shapes), `formats` (writers, atomic builds),
`validate` (OpenAI's format rules), `filters`, `splits`, `stats` (tokens and cost), `sidecar`
(top-k logprobs and action distributions for KD), `sources` (inputs and structural checks),
`builder` (the pipeline). See docs/dataset.md.
"""

from distillery.dataset.builder import BuildReport, DatasetBuilder, ProblemsError, build_finetune_jsonl
from distillery.dataset.sidecar import TopKSidecar, read_topk, tokenizer_fingerprint
from distillery.dataset.sources import DatasetInputError, Example, read_store, read_trajectory_jsonl
from distillery.dataset.validate import ValidationReport, validate_openai_jsonl

__all__ = [
    "BuildReport",
    "DatasetBuilder",
    "DatasetInputError",
    "Example",
    "ProblemsError",
    "TopKSidecar",
    "ValidationReport",
    "build_finetune_jsonl",
    "read_store",
    "read_topk",
    "read_trajectory_jsonl",
    "tokenizer_fingerprint",
    "validate_openai_jsonl",
]
