"""Offline world: how sure the teacher is, on "free" tokens (phrasing, plan) and "fact" tokens.

    python benchmarks/teacher_entropy.py --model world:teacher --split validation --n 200

For `--n` tasks of a split, one expert trajectory each (`solve(task, sample=i)`, a fresh phrasing
and plan per task) is tokenized exactly as training and inference see it (`chat_tokens`). The
model reads it once; at every assistant token it reports the top-1 probability and the entropy of
its next-token distribution at T=1, and the probability it gives the token the expert wrote.

A token is a *fact* token when its characters overlap a number (a price, a date, the digits of
`ORD-10475`) or a capitalised name that occurs in the user's query or a tool result (a product, a
city).
Everything else an assistant writes is *free*: the wording, the plan (which call first, parallel or
not) and the tool-call markup. A teacher worth distilling from is sure of the facts and spreads
probability over equivalent ways to say and plan them (issue target: mean top-1 0.75-0.95 overall,
with the uncertainty on free tokens). Offline-world figures; validation by default (design
decisions never look at test).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from statistics import fmean

# Numbers (the digits of an id too: "SKU-" itself is markup the model always writes) and capitalised names.
FACT_PATTERN = re.compile(r"\d[\d,]*(?:\.\d+)?|(?:[A-Z][a-z]+)(?: [A-Z][a-z]+)*")


def fact_spans(text: str, sources: str) -> list[tuple[int, int]]:
    """Character spans of `text` that are numbers, or capitalised names also found in `sources`."""
    spans = []
    for match in FACT_PATTERN.finditer(text):
        word = match.group()
        if word[0].isdigit() or word in sources:
            spans.append(match.span())
    return spans


def token_kinds(tokenizer, ids: list[int], start: int, end: int, sources: str) -> list[str]:
    """"fact" or "free" for each token of ids[start:end] (one assistant turn)."""
    pieces = [tokenizer.decode([token]) for token in ids[start:end]]
    text = "".join(pieces)
    spans = fact_spans(text, sources)
    kinds, offset = [], 0
    for piece in pieces:
        lo, hi = offset, offset + len(piece)
        fact = any(a < hi and lo < b for a, b in spans) and piece.strip() != ""
        kinds.append("fact" if fact else "free")
        offset = hi
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="world:teacher", help="a world: or hf: model URI")
    parser.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    parser.add_argument("--n", type=int, default=200, help="tasks (one expert trajectory each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    import torch

    from distillery.formats.hermes import to_hf_messages, to_hf_tools
    from distillery.chat_tokens import tokenize_conversation, trained_spans
    from distillery.models import load_model
    from distillery.world.expert import solve
    from distillery.world.tasks import generate_tasks

    model = load_model(args.model)
    tokenizer, network = model.tokenizer, model.model.eval()
    torch.set_num_threads(1)
    stats: dict[str, dict[str, list[float]]] = {k: {"top1": [], "entropy": [], "p_written": []} for k in ("fact", "free")}
    for index, task in enumerate(generate_tasks(args.split, args.n, args.seed)):
        trajectory = solve(task, sample=index)
        messages = to_hf_messages(trajectory.messages())
        sources = " ".join(str(m.get("content") or "") for m in messages if m.get("role") in ("user", "tool"))
        for piece in tokenize_conversation(tokenizer, messages, to_hf_tools(trajectory.tools)):
            ids = piece.input_ids
            with torch.no_grad():
                logits = network(torch.tensor([ids])).logits[0].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            for start, end in trained_spans(piece.loss_mask):
                kinds = token_kinds(tokenizer, ids, start, end, sources)
                for position, kind in zip(range(start, end), kinds):
                    row = logprobs[position - 1]  # the distribution that predicts token `position`
                    probs = row.exp()
                    stats[kind]["top1"].append(float(probs.max()))
                    stats[kind]["entropy"].append(float(-(probs * row).sum()))
                    stats[kind]["p_written"].append(math.exp(float(row[ids[position]])))

    every = {m: stats["fact"][m] + stats["free"][m] for m in ("top1", "entropy", "p_written")}
    figures = {"model": args.model, "split": args.split, "n_tasks": args.n, "seed": args.seed, "world": "offline"}
    print(f"{args.model} on {args.n} {args.split} tasks (one expert trajectory each), T=1, offline world")
    print(f"{'tokens':<8}{'count':>9}{'mean top-1':>12}{'entropy (nats)':>16}{'p(expert token)':>17}")
    for kind, values in (("fact", stats["fact"]), ("free", stats["free"]), ("all", every)):
        row = {"count": len(values["top1"]), "mean_top1": fmean(values["top1"]),
               "mean_entropy": fmean(values["entropy"]), "mean_p_written": fmean(values["p_written"])}
        figures[kind] = row
        print(f"{kind:<8}{row['count']:>9,}{row['mean_top1']:>12.3f}{row['mean_entropy']:>16.3f}{row['mean_p_written']:>17.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
