"""Train a world model from scratch on expert trajectories: the bundled teacher, or a student baseline.

    distillery world train-teacher                                  # the shipped teacher
    distillery world train-teacher --config student-xs --out runs/xs   # the plain-SFT student baseline

The recipe is ordinary supervised fine-tuning with the real stack: transformers' `Trainer` over
token ids from the tokenizer's own chat template, with the loss on assistant tokens only (the
template's `{% generation %}` markers give the mask through `return_assistant_tokens_mask`).
Everything is seeded: the task sample, the initial weights, the data order.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distillery.chat_format import to_hf_messages, to_hf_tools
from distillery.errors import ConfigError
from distillery.trajectory import Trajectory
from distillery.world.expert import solve
from distillery.world.tasks import generate_tasks

IGNORE_INDEX = -100


@dataclass
class TrainSettings:
    """What `train_world_model` does; every field is a `train-teacher` option."""

    config: str = "teacher"  # a shipped config name (teacher, student-s, student-xs) or a config.json path
    out: str = ""  # output directory; "" = the packaged teacher directory
    n_tasks: int = 16000  # expert trajectories from the train split
    epochs: float = 1.0
    max_steps: int = -1  # overrides epochs when > 0
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    seed: int = 0
    bf16: bool = True  # bfloat16 autocast; CPUs with AVX-512 BF16 or AMX run it about twice as fast
    threads: int = 0  # torch threads; 0 = torch's default
    log_every: int = 20
    init_from: str = ""  # continue from a saved world model instead of random weights (a second phase)
    extra: dict[str, Any] = field(default_factory=dict)


def encode_trajectory(tokenizer: Any, trajectory: Trajectory, max_length: int) -> dict[str, list[int]] | None:
    """Token ids and labels (assistant tokens only) for one trajectory; None when it is too long."""
    encoded = tokenizer.apply_chat_template(
        to_hf_messages(trajectory.messages()),
        tools=to_hf_tools(trajectory.tools),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids = list(encoded["input_ids"])
    mask = list(encoded["assistant_masks"])
    if len(ids) > max_length:
        return None
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(ids, mask)]
    return {"input_ids": ids, "labels": labels}


class _PadCollator:
    """Right-pads a batch: pad id for inputs, -100 for labels, zeros in the attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids, labels, attention = [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            ids.append(f["input_ids"] + [self.pad_id] * pad)
            labels.append(f["labels"] + [IGNORE_INDEX] * pad)
            attention.append([1] * len(f["input_ids"]) + [0] * pad)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(attention)}


def build_training_data(tokenizer: Any, n_tasks: int, seed: int, max_length: int) -> list[dict[str, list[int]]]:
    """Expert trajectories for `n_tasks` train-split tasks, encoded for SFT."""
    rows = []
    for task in generate_tasks("train", n_tasks, seed=seed):
        row = encode_trajectory(tokenizer, solve(task), max_length)
        if row is not None:
            rows.append(row)
    return rows


def train_world_model(settings: TrainSettings, *, progress: Any = None) -> dict[str, Any]:
    """Train one world model from scratch and save it (fp16 weights, float32 config) with its tokenizer.

    Returns the training report that is also written to `<out>/training.json`: data size, steps,
    final loss, wall time and the settings.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Trainer, TrainingArguments, set_seed

    from distillery.world.models import TEACHER_DIR, load_world_tokenizer, world_config_path

    out = Path(settings.out) if settings.out else TEACHER_DIR
    config_path = world_config_path(settings.config)
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    set_seed(settings.seed)
    tokenizer = load_world_tokenizer()
    config = LlamaConfig.from_json_file(str(config_path))
    if config.vocab_size != len(tokenizer):
        raise ConfigError(f"{config_path}: vocab_size is {config.vocab_size} but the world tokenizer has {len(tokenizer)} tokens")
    rows = build_training_data(tokenizer, settings.n_tasks, settings.seed, config.max_position_embeddings)
    data_s = time.perf_counter() - started

    if settings.init_from:
        model = AutoModelForCausalLM.from_pretrained(settings.init_from, local_files_only=True, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    scratch = out / "_trainer"
    args = TrainingArguments(
        output_dir=str(scratch),
        per_device_train_batch_size=settings.batch_size,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        adam_beta2=0.98,
        max_grad_norm=1.0,
        logging_steps=settings.log_every,
        # Checkpoints in the scratch folder let a long run on a busy machine be resumed or inspected.
        save_strategy="steps",
        save_steps=100,
        save_total_limit=1,
        report_to="none",
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=settings.bf16,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=progress is None,
        remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=_PadCollator(tokenizer.pad_token_id))
    result = trainer.train()
    train_s = time.perf_counter() - started - data_s

    out.mkdir(parents=True, exist_ok=True)
    model = trainer.model.to(torch.float16)  # halves the shipped file; loaded back as float32
    model.config.dtype = "float32"
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(str(out), safe_serialization=True)
    config_file = out / "config.json"
    saved = json.loads(config_file.read_text())
    saved["dtype"] = "float32"
    config_file.write_text(json.dumps(saved, indent=2) + "\n")
    tokenizer.save_pretrained(str(out))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    report = {
        "config": settings.config,
        "parameters": n_params,
        "examples": len(rows),
        "tokens_per_epoch": sum(len(r["input_ids"]) for r in rows),
        "steps": trainer.state.global_step,
        "final_loss": losses[-1] if losses else None,
        "train_loss": result.training_loss,
        "data_seconds": round(data_s, 1),
        "train_seconds": round(train_s, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{os.cpu_count()} CPU cores",
        "settings": asdict(settings),
        "loss_log": [(e["step"], round(e["loss"], 4)) for e in trainer.state.log_history if "loss" in e],
    }
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    return report
