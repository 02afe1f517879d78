"""Associative recall, the world's copying in miniature, on a model of the world teacher's shape.

K "key value" pairs (keys are distinct word tokens, values 3-5 digit strings), then SEP key: the
model must write that key's value digit by digit, as the teacher copies a field of a tool result.

Usage: python pending/associative_recall.py '{"num_attention_heads": 8}' LR STEPS
(the JSON overrides the teacher's config.json; '{}' keeps it).
"""
import distillery.world
from pathlib import Path
import sys, random, time, torch, json
from transformers import LlamaConfig, LlamaForCausalLM
torch.set_num_threads(1); torch.manual_seed(0)
base = {k: v for k, v in json.loads((Path(distillery.world.__file__).parent / "assets/configs/teacher.json").read_text()).items() if k != "architectures"}
base.update(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
lr = float(sys.argv[2]) if len(sys.argv) > 2 else 1e-3
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 1500
model = LlamaForCausalLM(LlamaConfig(**base)); rng = random.Random(0)
SEP, END = 10, 11
def example():
    keys = rng.sample(range(300, 360), rng.randint(3, 6))
    vals = {k: [100 + rng.randrange(10) for _ in range(rng.randint(3, 5))] for k in keys}
    ids = []
    for k in keys: ids += [k] + vals[k] + [500 + rng.randrange(100)]
    labels = [-100] * len(ids)
    for k in rng.sample(keys, 2):
        ids += [SEP, k] + vals[k] + [END]; labels += [-100, -100] + vals[k] + [END]
    return ids, labels
def batch(n):
    ex = [example() for _ in range(n)]; L = max(len(i) for i, _ in ex)
    ids = torch.zeros((n, L), dtype=torch.long); lab = torch.full((n, L), -100); att = torch.zeros((n, L), dtype=torch.long)
    for j, (i, l) in enumerate(ex): ids[j, :len(i)] = torch.tensor(i); lab[j, :len(l)] = torch.tensor(l); att[j, :len(i)] = 1
    return ids, lab, att
opt = torch.optim.AdamW(model.parameters(), lr=lr); t = time.time()
for s in range(steps):
    ids, lab, att = batch(32)
    for g in opt.param_groups: g["lr"] = lr * min(1, (s + 1) / 30)
    loss = model(input_ids=ids, attention_mask=att, labels=lab).loss; loss.backward(); opt.step(); opt.zero_grad()
    if (s + 1) % 100 == 0:
        with torch.no_grad():
            ids, lab, att = batch(256); p = model(input_ids=ids, attention_mask=att).logits.argmax(-1)
        m = lab[:, 1:] != -100; hit = (p[:, :-1] == lab[:, 1:])
        print(s + 1, f"loss {loss.item():.3f} digit acc {((hit & m).sum() / m.sum()).item():.3f} "
              f"all right {((hit | ~m).all(1)).float().mean().item():.3f} {time.time()-t:.0f}s", flush=True)
