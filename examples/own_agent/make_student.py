"""An untrained student for your agent, built from a model config and distillery's bundled tokenizer.

    python make_student.py students/base

Nothing is downloaded. The config is the offline world's smallest student (a Llama with hidden
size 48 and 2 layers, 129k parameters) with room for 1,024 tokens instead of 512, because your tool
schemas are rendered into every prompt. The tokenizer is the world tokenizer: 1,536 tokens,
trained on the offline world's shop transcripts. Train the result with
`distillery train --student hf:students/base --lr 1e-2 ...` (a from-scratch model needs a far
higher learning rate than the 2e-5 meant for pretrained ones).
"""

import sys

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from distillery.world.models import load_world_tokenizer, world_config_path

out = sys.argv[1] if len(sys.argv) > 1 else "students/base"
config = LlamaConfig.from_json_file(world_config_path("student-xs"))  # or "student-s", or your config.json
config.max_position_embeddings = 1024
tokenizer = load_world_tokenizer()
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config)
model.generation_config.eos_token_id = tokenizer.eos_token_id  # stop at <|im_end|>
model.generation_config.pad_token_id = tokenizer.pad_token_id
model.save_pretrained(out)
tokenizer.save_pretrained(out)
print(f"wrote {out}: {model.num_parameters():,} parameters, {len(tokenizer):,} tokens in the vocabulary")
