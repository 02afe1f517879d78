"""Size of the top-k KD sidecar against dense teacher logits, and build time per format, in one run.

    python benchmarks/dataset_sidecar.py --examples 200 --k 5 20

Trajectories are the dataset tests' golden shape (3 steps, 2 parallel calls) with varied
arguments; teacher logprobs are synthetic (random alternatives and values, the sampled token
first) over the offline world's tokenizer, so ids and values are close to incompressible: a
conservative size. Dense baseline: one fp16 logit per vocabulary entry per target token.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.test_dataset_support

from distillery.dataset import DatasetBuilder  # noqa: E402
from tests.test_dataset_support import teacher_logprobs, varied_trajectories  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--k", type=int, nargs="+", default=[5, 20])
    args = parser.parse_args()

    from distillery.world.models import load_world_tokenizer

    tokenizer = load_world_tokenizer()
    vocab = len(tokenizer)
    print(f"offline world tokenizer: vocab {vocab}; {args.examples} examples; synthetic teacher logprobs")
    print(f"{'format':<10} {'build s':>8} {'examples/s':>11} {'file bytes/token':>17}")
    with tempfile.TemporaryDirectory() as tmp:
        base = varied_trajectories(args.examples)
        for fmt in ("openai", "hf", "parquet"):
            start = time.perf_counter()
            report = DatasetBuilder(format=fmt, tokenizer=tokenizer).build(base, Path(tmp) / fmt)
            seconds = time.perf_counter() - start
            size = sum(p.stat().st_size for p in report.files if p.name.startswith("train."))
            tokens = report.splits["train"].total
            print(f"{fmt:<10} {seconds:>8.2f} {args.examples / seconds:>11.1f} {size / tokens:>17.2f}")

        print(f"\n{'k':>4} {'coverage':>9} {'sidecar bytes/token':>20} {'dense fp16 bytes/token':>23} {'dense/sparse':>13}")
        for k in args.k:
            trajectories = [teacher_logprobs(t.model_copy(deep=True), tokenizer, k=k, seed=i) for i, t in enumerate(base)]
            report = DatasetBuilder(tokenizer=tokenizer, teacher_tokenizer=tokenizer, topk=k).build(trajectories, Path(tmp) / f"k{k}")
            topk = report.topk["train"]
            dense = vocab * 2
            print(f"{k:>4} {topk.coverage:>9.1%} {topk.bytes_per_token:>20.1f} {dense:>23} {dense / topk.bytes_per_token:>12.0f}x")


if __name__ == "__main__":
    main()
