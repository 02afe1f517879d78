"""Synthetic copy task: how fast a model of the world teacher's shape learns to copy ids from random init.

Usage: python pending/copy_task.py single|pair STEPS   (one token per digit, or one per digit pair)
Random ids and numbers, then 2-4 of them again; the loss is on each repeat after its first two tokens.
"""
import json, random, sys, time
from pathlib import Path

import torch

import distillery.world
from transformers import LlamaConfig, LlamaForCausalLM
torch.set_num_threads(1); torch.manual_seed(0)
mode, steps = sys.argv[1], int(sys.argv[2])
cfg = LlamaConfig(**{k: v for k, v in json.loads((Path(distillery.world.__file__).parent / "assets/configs/teacher.json").read_text()).items() if k != "architectures"})
model = LlamaForCausalLM(cfg)
rng = random.Random(0)
SEP, SKU, ORD, DOT, DASH, NL = 10, 11, 12, 13, 14, 15  # structural tokens; digits 100.. ; noise 500..
def digits(n):
    s = [rng.randrange(10) for _ in range(n)]
    if mode == "single": return [100 + d for d in s]
    if n % 2: s = [0] + s
    return [200 + 10 * s[i] + s[i + 1] for i in range(0, len(s), 2)]
def item():
    k = rng.random()
    if k < 0.35: return [SKU] + digits(4)
    if k < 0.7: return [ORD] + digits(5)
    return digits(3) + [DOT] + digits(2)
def example():
    items = [item() for _ in range(rng.randint(4, 8))]
    ids = []
    for it in items: ids += it + [500 + rng.randrange(400)] * rng.randint(1, 3)
    ids.append(NL); labels = [-100] * len(ids)
    for it in rng.sample(items, rng.randint(2, 4)):
        ids += [SEP] + it; labels += [-100, -100, -100] + it[2:]
    return ids, labels
def batch(n):
    ex = [example() for _ in range(n)]; L = max(len(i) for i, _ in ex)
    ids = torch.zeros((n, L), dtype=torch.long); lab = torch.full((n, L), -100); att = torch.zeros((n, L), dtype=torch.long)
    for j, (i, l) in enumerate(ex): ids[j, :len(i)] = torch.tensor(i); lab[j, :len(l)] = torch.tensor(l); att[j, :len(i)] = 1
    return ids, lab, att
def item_acc():
    model.eval(); ids, lab, att = batch(256)
    with torch.no_grad(): pred = model(input_ids=ids, attention_mask=att).logits.argmax(-1)
    model.train(); m = lab[:, 1:] != -100
    return (((pred[:, :-1] == lab[:, 1:]) | ~m).all(1)).float().mean().item(), ((pred[:, :-1] == lab[:, 1:]) & m).sum().item() / m.sum().item()
opt = torch.optim.AdamW(model.parameters(), lr=3e-3); t = time.time()
for s in range(steps):
    ids, lab, att = batch(32)
    lr = 3e-3 * min(1, (s + 1) / 30); [g.__setitem__("lr", lr) for g in opt.param_groups]
    model(input_ids=ids, attention_mask=att, labels=lab).loss.backward(); opt.step(); opt.zero_grad()
    if (s + 1) % 100 == 0:
        seq, tok = item_acc(); print(mode, s + 1, f"token acc {tok:.3f} all-copies-right {seq:.3f} {time.time()-t:.0f}s", flush=True)
