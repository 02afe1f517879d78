"""Train a world model from scratch on expert trajectories: the bundled teacher, or a student baseline.

    distillery world train-teacher --out runs/teacher               # a teacher from scratch (hours on a 2-core CPU)
    distillery world train-teacher --config student-xs --out runs/xs   # a plain-SFT student baseline

The recipe is ordinary supervised fine-tuning with the real stack: transformers' `Trainer` over
token ids from the tokenizer's own chat template, with the loss on assistant tokens only (the
template's `{% generation %}` markers give the mask through `return_assistant_tokens_mask`).
With `copy_weight` != 1 the tokens the model must find in the query by content (`copy_mask`)
weigh more in that loss. Everything is seeded: the task sample, the initial weights, the data
order. It runs on a CUDA GPU when torch sees one (`device="auto"`), else on the CPU.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from distillery.formats.hermes import to_hf_messages, to_hf_tools
from distillery.chat_tokens import tokenize_conversation
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
    n_tasks: int = 64000  # expert trajectories from the train split
    # Extra train-split tasks drawn only from these families, added to the n_tasks above: a
    # continuation phase aimed at the families a model still fails (docs/world.md, "Teacher training").
    focus_families: tuple[str, ...] = ()
    focus_tasks: int = 0
    epochs: float = 1.0
    max_steps: int = 4000  # overrides epochs when > 0
    batch_size: int = 64
    # 1e-3, not the v1 recipe's 3e-3: at 3e-3 this model did not form the circuit that copies an id
    # digit by digit (docs/world.md, "Teacher training").
    learning_rate: float = 1e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    seed: int = 0
    bf16: bool = True  # bfloat16 autocast; CPUs with AVX-512 BF16 or AMX run it about twice as fast
    threads: int = 0  # torch threads; 0 = torch's default
    log_every: int = 20
    init_from: str = ""  # continue from a saved world model instead of random weights (a second phase)
    copy_weight: float = 5.0  # loss weight of assistant tokens that copy a token from the query or a tool result
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
    workers: int = 0  # processes that build the training data; 0 = one per CPU core, at most 16
    max_minutes: float = 0.0  # stop training after this many minutes (the model is still saved); 0 = no limit
    # Random batches by default. Grouping sequences of similar length (transformers'
    # LengthGroupedSampler) saves about a third of the padded tokens, but a world batch of similar
    # lengths is mostly one task family, and the teacher then learned about half as fast per step
    # (docs/world.md, "Teacher training").
    group_by_length: bool = False
    # Pack each batch's sequences into fewer rows (`_PackCollator`): the same examples and loss per
    # step, about a quarter fewer tokens computed on world trajectories (docs/world.md).
    pack: bool = True
    save_steps: int = 100  # a checkpoint in <out>/_trainer every this many steps (the latest one is kept)
    resume: bool = False  # continue from the latest checkpoint in <out>/_trainer (same settings, same data)
    extra: dict[str, Any] = field(default_factory=dict)


def encode_trajectory(tokenizer: Any, trajectory: Trajectory, max_length: int) -> list[dict[str, list[int]]]:
    """Training sequences for one trajectory: token ids, labels (assistant tokens only) and the
    copy mask. Each assistant turn is tokenized after exactly its inference prompt
    (`distillery.chat_tokens`), so usually one sequence, more where the history re-tokenizes
    differently; sequences longer than `max_length` are dropped."""
    special = set(tokenizer.all_special_ids)
    out = []
    for piece in tokenize_conversation(tokenizer, to_hf_messages(trajectory.messages()), to_hf_tools(trajectory.tools)):
        if len(piece.input_ids) > max_length:
            continue
        out.append({
            "input_ids": piece.input_ids,
            "labels": piece.labels(),
            "copy_mask": copy_mask(piece.input_ids, piece.loss_mask, tokenizer.eos_token_id, special),
        })
    return out


def copy_mask(ids: list[int], assistant_mask: list[int], end_of_message: int, special_ids: set[int]) -> list[int]:
    """1 for assistant tokens copied from a user or tool message that the model must find by content.

    A token counts when it occurs in a user or tool message but never after the token that precedes
    it here: the city after `"city": "` (the query said "in Cairo"), the first digit of a day
    count. Continuing a copied run (the second digit of a SKU) is easy for a small model, finding
    where the run starts is not, and each such token is one in a sequence of about 200, so the mean
    loss hardly moves when the model never learns it: the first shipped teacher wrote the same city
    into every call. `copy_weight` makes these tokens count more. The system message (with the
    tool block) ends at the first end-of-message token and is not a source; special tokens never count.
    """
    system_end = ids.index(end_of_message) if end_of_message in ids else 0
    sources: dict[int, set[int]] = {}  # token -> the tokens that precede it in user and tool messages
    for position in range(max(system_end, 1), len(ids)):
        if not assistant_mask[position] and ids[position] not in special_ids:
            sources.setdefault(ids[position], set()).add(ids[position - 1])
    return [
        int(bool(keep) and position > 0 and token in sources and ids[position - 1] not in sources[token])
        for position, (token, keep) in enumerate(zip(ids, assistant_mask))
    ]


class _PadCollator:
    """Right-pads a batch: pad id for inputs, -100 for labels, zeros in the attention (and copy) masks."""

    def __init__(self, pad_id: int, with_copy_mask: bool = False):
        self.pad_id = pad_id
        self.with_copy_mask = with_copy_mask  # only the copy-weighted trainer consumes it; the model must not see it

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        batch = self._padded(features, width)
        batch["attention_mask"] = torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))
                                                for f in features])
        return batch

    def _padded(self, rows: list[dict[str, list[int]]], width: int) -> dict[str, Any]:
        """`rows` right-padded to `width` as tensors: inputs, labels and (when asked for) the copy mask."""
        import torch

        def pad(key: str, fill: int) -> Any:
            return torch.tensor([row.get(key, [0] * len(row["input_ids"])) + [fill] * (width - len(row["input_ids"]))
                                 for row in rows])

        batch = {"input_ids": pad("input_ids", self.pad_id), "labels": pad("labels", IGNORE_INDEX)}
        if self.with_copy_mask:
            batch["copy_mask"] = pad("copy_mask", 0)
        return batch


class _PackCollator(_PadCollator):
    """Packs a batch's sequences into as few rows as fit within its longest sequence (longest first,
    first fit): the same examples and the same loss as `_PadCollator`, with fewer padded tokens.

    Each sequence keeps its own position ids (0, 1, ...) and no attention mask is passed, so the
    model attends within each sequence only (transformers' `find_packed_sequence_indices` turns the
    restarting positions into a block-causal mask). A sequence's first label is dropped: unpacked it
    is never predicted (there is no token before it), and packed it would be predicted from the
    sequence before it.
    """

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        rows: list[dict[str, list[int]]] = []
        for feature in sorted(features, key=lambda f: len(f["input_ids"]), reverse=True):
            size = len(feature["input_ids"])
            row = next((r for r in rows if len(r["input_ids"]) + size <= width), None)
            if row is None:
                row = {"input_ids": [], "labels": [], "copy_mask": [], "position_ids": []}
                rows.append(row)
            row["input_ids"] += feature["input_ids"]
            row["labels"] += [IGNORE_INDEX] + list(feature["labels"][1:])
            row["copy_mask"] += feature.get("copy_mask", [0] * size)
            row["position_ids"] += range(size)
        batch = self._padded(rows, width)
        # The padding is a sequence of its own: its positions restart at 0.
        batch["position_ids"] = torch.tensor([row["position_ids"] + list(range(width - len(row["input_ids"])))
                                              for row in rows])
        return batch


def weighted_lm_loss(logits: Any, labels: Any, copy_mask: Any, copy_weight: float) -> Any:
    """Next-token cross-entropy over labelled tokens, copy tokens weighted `copy_weight`, others 1.

    Normalised by the total weight (the losses module's weighted `hard_ce`), so with
    copy_weight=1 it is the ordinary mean token loss.
    """
    from distillery.distill.losses import hard_ce

    weights = 1.0 + (copy_weight - 1.0) * copy_mask[:, 1:].float()
    return hard_ce(logits[:, :-1], labels[:, 1:], ignore_index=IGNORE_INDEX, weights=weights)


def _copy_weighted_trainer(base: type, copy_weight: float) -> type:
    """A transformers `Trainer` whose loss is `weighted_lm_loss`; nothing else is overridden.

    Built in a function, like the deadline callback below, because transformers is imported lazily.
    """

    class CopyWeightedTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            copies = inputs.pop("copy_mask")
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = weighted_lm_loss(outputs.logits, labels, copies, copy_weight)
            return (loss, outputs) if return_outputs else loss

    return CopyWeightedTrainer


def _deadline_callback(base: type, minutes: float) -> Any:
    """Stops training once `minutes` have passed; the trainer then saves the model as usual, and a
    checkpoint that `resume` continues from."""

    class Deadline(base):
        def __init__(self):
            self.stop_at = time.monotonic() + 60 * minutes
            self.stopped_at_step: int | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() >= self.stop_at and self.stopped_at_step is None:
                self.stopped_at_step = state.global_step
                control.should_training_stop = True
                control.should_save = True  # a checkpoint at the stop, so --resume continues from here
            return control

    return Deadline()


def _encode_tasks(tokenizer: Any, tasks: list[Any], max_length: int) -> list[dict[str, list[int]]]:
    return [row for task in tasks for row in encode_trajectory(tokenizer, solve(task), max_length)]


def _encode_chunk(job: tuple[list[Any], int]) -> list[dict[str, list[int]]]:
    """One worker process's share: it loads its own tokenizer (spawned processes share nothing)."""
    from distillery.world.models import load_world_tokenizer

    tasks, max_length = job
    return _encode_tasks(load_world_tokenizer(), tasks, max_length)


def training_tasks(n_tasks: int, seed: int, focus_families: Sequence[str] = (), focus_tasks: int = 0) -> list[Any]:
    """`n_tasks` train-split tasks, then `focus_tasks` more from `focus_families` only (drawn with
    another seed, so they are new tasks, not repeats of the first ones)."""
    tasks = generate_tasks("train", n_tasks, seed=seed)
    if focus_tasks:
        if not focus_families:
            raise ConfigError("--focus-tasks needs --focus (the task families to draw them from)")
        tasks += generate_tasks("train", focus_tasks, seed=seed + 1_000_003, families=list(focus_families))
    return tasks


def build_training_data(tokenizer: Any, n_tasks: int, seed: int, max_length: int, workers: int = 1,
                        focus_families: Sequence[str] = (), focus_tasks: int = 0) -> list[dict[str, list[int]]]:
    """Expert trajectories for the `training_tasks`, encoded for SFT, in task order.

    Solving and rendering costs a few ms per task, so large sets are built by `workers` processes;
    the rows are the same for any worker count.
    """
    tasks = training_tasks(n_tasks, seed, focus_families, focus_tasks)
    n_tasks = len(tasks)
    if workers <= 1 or n_tasks < 2000:
        return _encode_tasks(tokenizer, tasks, max_length)
    import multiprocessing

    chunk = -(-len(tasks) // (4 * workers))
    jobs = [(tasks[i : i + chunk], max_length) for i in range(0, len(tasks), chunk)]
    # spawn, not fork: the parent may already hold torch threads (and CUDA, on a GPU machine)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return [row for part in pool.map(_encode_chunk, jobs) for row in part]


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"; asking for a missing GPU is an error."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA GPU on this machine")
    return device


def train_world_model(settings: TrainSettings, *, progress: Any = None) -> dict[str, Any]:
    """Train one world model from scratch and save it (fp16 weights, float32 config) with its tokenizer.

    Returns the training report that is also written to `<out>/training.json`: data size, steps,
    final loss, wall time, the device and the settings.
    """
    import torch
    from transformers import (
        AutoModelForCausalLM,
        LlamaConfig,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from distillery.world.models import (
        TEACHER_DIR,
        load_world_tokenizer,
        world_config_path,
    )

    out = Path(settings.out) if settings.out else TEACHER_DIR
    config_path = world_config_path(settings.config)
    device = resolve_device(settings.device)
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    set_seed(settings.seed)
    tokenizer = load_world_tokenizer()
    config = LlamaConfig.from_json_file(str(config_path))
    if config.vocab_size != len(tokenizer):
        raise ConfigError(f"{config_path}: vocab_size is {config.vocab_size} but the world tokenizer has {len(tokenizer)} tokens")
    workers = settings.workers or min(os.cpu_count() or 1, 16)
    rows = build_training_data(tokenizer, settings.n_tasks, settings.seed, config.max_position_embeddings, workers,
                               settings.focus_families, settings.focus_tasks)
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
        save_steps=settings.save_steps,
        save_total_limit=1,
        report_to="none",
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=settings.bf16,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=progress is None,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
    )
    trainer_class = _copy_weighted_trainer(Trainer, settings.copy_weight) if settings.copy_weight != 1.0 else Trainer
    deadline = _deadline_callback(TrainerCallback, settings.max_minutes) if settings.max_minutes > 0 else None
    collator = (_PackCollator if settings.pack else _PadCollator)(tokenizer.pad_token_id, settings.copy_weight != 1.0)
    model.config.use_cache = False  # with a cache the model ignores packed position ids and attends across sequences
    trainer = trainer_class(model=model, args=args, train_dataset=rows, data_collator=collator,
                            callbacks=[deadline] if deadline else None)
    checkpoints = sorted(scratch.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])) if scratch.is_dir() else []
    if settings.resume and not checkpoints:
        raise ConfigError(f"--resume: no checkpoint in {scratch} to continue from")
    resumed_from = int(checkpoints[-1].name.split("-")[1]) if settings.resume else None
    result = trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if settings.resume else None)
    train_s = time.perf_counter() - started - data_s

    out.mkdir(parents=True, exist_ok=True)
    model = trainer.model.to("cpu", torch.float16)  # halves the shipped file; loaded back as float32
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
        "stopped_by_deadline_at_step": deadline.stopped_at_step if deadline else None,
        "resumed_from_step": resumed_from,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "machine": f"{os.cpu_count()} CPU cores" + (f", {torch.cuda.get_device_name()}" if device == "cuda" else ""),
        "settings": asdict(settings),
        "loss_log": [(e["step"], round(e["loss"], 4)) for e in trainer.state.log_history if "loss" in e],
    }
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    import shutil

    if deadline is None or deadline.stopped_at_step is None:
        shutil.rmtree(scratch, ignore_errors=True)  # finished: the checkpoints are no longer needed
    return report
