"""Offline world: a training step on packed batches against padded ones, side by side.

    python benchmarks/world_packing.py --steps 8

`distillery world train-teacher` packs each batch's sequences into as few rows as fit within its
longest one (`--pack`, the default) instead of padding every sequence to the longest (`--no-pack`).
Both see the same examples and compute the same loss (tests/test_world_train.py checks the loss and
gradients agree). This script draws `--steps` random batches of `--batch-size` train-split
trajectories, as the trainer does, and times one optimizer step (forward, backward, AdamW) on each
batch both ways, alternating which goes first, with the teacher's config from random weights,
bf16 autocast and the torch threads given. It prints tokens computed per step (real and padding)
and the median seconds per step, and their ratios. Timing only: nothing is trained to a result.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="batches timed, each both ways")
    parser.add_argument("--batch-size", type=int, default=64, help="trajectories per batch (the recipe's 64)")
    parser.add_argument("--n-tasks", type=int, default=1500, help="train-split tasks the batches are drawn from")
    parser.add_argument("--config", default="teacher", help="world model config: teacher, student-s, student-xs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    parser.add_argument("--fp32", action="store_true", help="float32 instead of bf16 autocast")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from distillery.world.models import load_world_tokenizer, world_config_path
    from distillery.world.train import _PackCollator, _PadCollator, build_training_data, weighted_lm_loss

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tokenizer = load_world_tokenizer()
    config = LlamaConfig.from_json_file(str(world_config_path(args.config)))
    config.use_cache = False
    rows = build_training_data(tokenizer, args.n_tasks, seed=0, max_length=config.max_position_embeddings)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    collators = {"padded": _PadCollator(tokenizer.pad_token_id, True), "packed": _PackCollator(tokenizer.pad_token_id, True)}

    def step(batch) -> float:
        started = time.perf_counter()
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "copy_mask")}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.fp32):
            logits = model(**inputs).logits
        loss = weighted_lm_loss(logits.float(), batch["labels"], batch["copy_mask"], 20.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - started

    rng = random.Random(0)
    step(collators["packed"](rng.sample(rows, args.batch_size)))  # warm-up, not timed
    seconds = {name: [] for name in collators}
    tokens = {name: 0 for name in collators}
    real = 0
    for index in range(args.steps):
        features = rng.sample(rows, args.batch_size)
        real += sum(len(f["input_ids"]) for f in features)
        order = list(collators) if index % 2 == 0 else list(reversed(collators))
        for name in order:
            batch = collators[name](features)
            tokens[name] += batch["input_ids"].numel()
            seconds[name].append(step(batch))

    print(f"{args.steps} batches of {args.batch_size} train-split trajectories, config {args.config}, "
          f"{torch.get_num_threads()} torch threads, {'fp32' if args.fp32 else 'bf16 autocast'}")
    print(f"{'':8} {'tokens/step':>12} {'real share':>11} {'median s/step':>14}")
    for name in collators:
        print(f"{name:8} {tokens[name] / args.steps:12.0f} {real / tokens[name]:11.1%} {statistics.median(seconds[name]):14.3f}")
    ratio_tokens = tokens["packed"] / tokens["padded"]
    ratio_time = statistics.median(seconds["packed"]) / statistics.median(seconds["padded"])
    print(f"packed / padded: tokens {ratio_tokens:.2f}x, seconds per step {ratio_time:.2f}x")


if __name__ == "__main__":
    main()
