"""Two synthetic copying probes on a model of the world teacher's shape, trained from random init.

    python benchmarks/copy_probes.py copy single|pair [--steps 600] [--lr 3e-3]
    python benchmarks/copy_probes.py recall [--config '{"num_attention_heads": 8}'] [--steps 1500] [--lr 1e-3]

copy: random ids (SKU-dddd, ORD-ddddd), numbers and noise, then 2-4 of the items again; the loss is
on each repeat after its first two tokens. `single` is one token per digit, `pair` one per two digits.

recall (associative recall, the world's copying in miniature): 3-6 "key value" pairs, keys distinct
word tokens and values 3-5 digits, then SEP key: the model writes that key's value digit by digit,
as the teacher copies a field of a tool result.

Both train with batches of 32 on one thread (AdamW, linear warm-up over 30 steps, then constant),
and every 100 steps print the loss, the share of labelled tokens the argmax gets right, and the
share of 256 fresh examples with every labelled token right. Seeded: the same command prints the
same figures.
"""

import argparse
import json
import random
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import distillery.world

# Token ids, as the figures in docs/world.md were measured with them: digits from 100 (digit
# pairs from 200), keys from 300, noise from 500, and a few structural tokens per task.
SEP = 10
SKU, ORD, DOT, NL = 11, 12, 13, 15  # copy
END = 11  # recall: the end of a value


def copy_example(rng: random.Random, mode: str) -> tuple[list[int], list[int]]:
    def digits(n):
        s = [rng.randrange(10) for _ in range(n)]
        if mode == "single":
            return [100 + d for d in s]
        if n % 2:
            s = [0] + s
        return [200 + 10 * s[i] + s[i + 1] for i in range(0, len(s), 2)]

    def item():
        k = rng.random()
        if k < 0.35:
            return [SKU] + digits(4)
        if k < 0.7:
            return [ORD] + digits(5)
        return digits(3) + [DOT] + digits(2)

    items = [item() for _ in range(rng.randint(4, 8))]
    ids = []
    for it in items:
        ids += it + [500 + rng.randrange(400)] * rng.randint(1, 3)
    ids.append(NL)
    labels = [-100] * len(ids)
    for it in rng.sample(items, rng.randint(2, 4)):
        ids += [SEP] + it
        labels += [-100, -100, -100] + it[2:]  # which item is meant shows only in its first two tokens
    return ids, labels


def recall_example(rng: random.Random) -> tuple[list[int], list[int]]:
    keys = rng.sample(range(300, 360), rng.randint(3, 6))
    values = {k: [100 + rng.randrange(10) for _ in range(rng.randint(3, 5))] for k in keys}
    ids = []
    for k in keys:
        ids += [k] + values[k] + [500 + rng.randrange(100)]
    labels = [-100] * len(ids)
    for k in rng.sample(keys, 2):
        ids += [SEP, k] + values[k] + [END]
        labels += [-100, -100] + values[k] + [END]
    return ids, labels


def padded_batch(examples: list[tuple[list[int], list[int]]]):
    width = max(len(ids) for ids, _ in examples)
    ids = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (i, l) in enumerate(examples):
        ids[row, : len(i)], labels[row, : len(l)], attention[row, : len(i)] = torch.tensor(i), torch.tensor(l), 1
    return ids, labels, attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=("copy", "recall"))
    parser.add_argument("mode", nargs="?", choices=("single", "pair"), default="single", help="copy: digit tokens")
    parser.add_argument("--config", default="{}", help="JSON overriding the teacher's config.json")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--lr", type=float)
    args = parser.parse_args()
    steps = args.steps or (600 if args.task == "copy" else 1500)
    lr = args.lr or (3e-3 if args.task == "copy" else 1e-3)

    torch.set_num_threads(1)
    torch.manual_seed(0)
    shape = json.loads((Path(distillery.world.__file__).parent / "assets/configs/teacher.json").read_text())
    shape.pop("architectures", None)
    model = LlamaForCausalLM(LlamaConfig(**{**shape, **json.loads(args.config)}))
    rng = random.Random(0)
    example = (lambda: copy_example(rng, args.mode)) if args.task == "copy" else (lambda: recall_example(rng))

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    start = time.time()
    for step in range(steps):
        ids, labels, attention = padded_batch([example() for _ in range(32)])
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1, (step + 1) / 30)
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if (step + 1) % 100 == 0:
            ids, labels, attention = padded_batch([example() for _ in range(256)])
            with torch.no_grad():
                predicted = model(input_ids=ids, attention_mask=attention).logits.argmax(-1)
            kept = labels[:, 1:] != -100
            hit = predicted[:, :-1] == labels[:, 1:]
            print(f"{args.task} {step + 1} loss {loss.item():.3f} tokens right {((hit & kept).sum() / kept.sum()).item():.3f} "
                  f"all right {(hit | ~kept).all(1).float().mean().item():.3f} {time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
