"""Teacher-forced accuracy of world models on what a teacher must copy, on validation expert trajectories.

Usage: python benchmarks/teacher_copy_accuracy.py MODEL_DIR [MODEL_DIR ...]
(a folder with config.json and model.safetensors; the world tokenizer is the packaged one).

For 80 validation tasks (seed 11) and their expert trajectories, the share of assistant tokens the
model's argmax gets right, over all of them and per group of tokens that are copied from the
question or a tool result: digits (ids, dates, amounts), cities, and the two words of a product
name (adjective, noun). A teacher that passes needs each group near 100%.
"""
import sys

import torch
from transformers import AutoModelForCausalLM

from distillery.world.db import ADJECTIVES, CITIES, NOUNS
from distillery.world.expert import solve
from distillery.world.models import load_world_tokenizer
from distillery.world.tasks import generate_tasks
from distillery.world.tools import toolbox
from distillery.world.train import IGNORE_INDEX, encode_trajectory

torch.set_num_threads(1)
tokenizer = load_world_tokenizer()
groups = {name: {tokenizer.convert_tokens_to_ids(word) for word in words}
          for name, words in (("digit", [str(d) for d in range(10)]), ("city", CITIES), ("adjective", ADJECTIVES), ("noun", NOUNS))}
validation_tools = toolbox("validation")
rows = [row for task in generate_tasks("validation", 80, seed=11)
        for row in encode_trajectory(tokenizer, solve(task, validation_tools), 512)]
for path in sys.argv[1:]:
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    right = {name: [0, 0] for name in ("all", *groups)}
    for row in rows:
        ids, labels = row["input_ids"], row["labels"]
        with torch.no_grad():
            predicted = model(torch.tensor([ids])).logits[0].argmax(-1)
        for i in range(1, len(ids)):
            if labels[i] == IGNORE_INDEX:
                continue
            hit = int(predicted[i - 1].item() == ids[i])
            for name in ["all", *(g for g, members in groups.items() if ids[i] in members)]:
                right[name][0] += hit
                right[name][1] += 1
    print(path + ": " + ", ".join(f"{name} {hits / total:.1%} ({total})" for name, (hits, total) in right.items()))
