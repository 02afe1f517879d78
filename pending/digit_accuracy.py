"""Teacher-forced accuracy of world models on the digits of validation expert trajectories (world v2).

Usage, on the patched tree: python pending/digit_accuracy.py MODEL_DIR [MODEL_DIR ...]
(a folder with config.json and model.safetensors; the world tokenizer is the packaged one).
"""
import sys, torch
from transformers import AutoModelForCausalLM
from distillery.world.models import load_world_tokenizer
from distillery.world.tasks import generate_tasks
from distillery.world.tools import toolbox
from distillery.world.expert import solve
from distillery.world.train import encode_trajectory
torch.set_num_threads(1)
tok = load_world_tokenizer()
digit_ids = {tok.convert_tokens_to_ids(str(d)) for d in range(10)}
tb = toolbox("validation")
tasks = generate_tasks("validation", 80, seed=11)
rows = [r for t in tasks for r in encode_trajectory(tok, solve(t, tb), 512)]
for path in sys.argv[1:]:
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ok = n = okall = nall = 0
    for r in rows:
        ids, labels = r["input_ids"], r["labels"]
        with torch.no_grad():
            pred = model(torch.tensor([ids])).logits[0].argmax(-1)
        for i in range(1, len(ids)):
            if labels[i] != -100:
                hit = pred[i-1].item() == ids[i]
                nall += 1; okall += hit
                if ids[i] in digit_ids:
                    n += 1; ok += hit
    print(f"{path}: digit acc {ok/n:.3f} ({n}), all assistant acc {okall/nall:.3f}")
