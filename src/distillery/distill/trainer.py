"""`DistillationTrainer`: TRL's `SFTTrainer` with a knowledge-distillation loss, and `train_student`.

The trainer changes one thing: `compute_loss`. Everything else (optimisation, gradient
accumulation, checkpoints and resume, seeding, logging, `accelerate launch` with DDP/FSDP/
DeepSpeed, PEFT) is the `transformers.Trainer` that `SFTTrainer` extends. Data goes through TRL's
own pipeline: chat template, assistant-only labels, truncation. Teacher targets ride along as one
integer column (`kd_row`, see `signals.py`) and are turned into tensors in the collator.

    L = alpha * CE(student, labels) + (1 - alpha) * T^2 * D(teacher^T || student^T)

per assistant token, from `distillery.distill.losses`. With the sequence signal (or alpha = 1 and
no teacher) the loss is SFTTrainer's own fused cross entropy, so plain SFT costs nothing extra.

    from distillery.distill.config import DistillationConfig
    from distillery.distill.trainer import train_student
    config = DistillationConfig(signal="online", alpha=0.5, temperature=2.0)
    out = train_student("world:student-xs", "data/train.jsonl", out="runs/xs-kd", teacher="world:teacher",
                        config=config)
    # out is a standard Hugging Face model directory: load_model(f"hf:{out}"), or vLLM.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from distillery.chat_tokens import check_prefix_property
from distillery.distill.budget import watch_ledger
from distillery.distill.config import OFFLINE_SIGNALS, DistillationConfig, LossOptions
from distillery.distill.ledger import offline_ledger
from distillery.distill.losses import action_distribution_loss, kd_loss, sequence_logprob, sparse_kd_loss
from distillery.distill.signals import (
    KD_ROW,
    ActionSignal,
    OnlineTeacherSignal,
    SequenceSignal,
    SparseTopKSignal,
    TeacherSignal,
    teacher_topk,
    tokenize_rows_dataset,
    write_teacher_topk,
)
from distillery.distill.training_arguments import DistillationTrainingArguments
from distillery.distill.training_data import (  # noqa: F401  (re-exported: the public import path)
    attach_action_file,
    chat_rows,
    load_training_data,
)
from distillery.distill.training_setup import (  # noqa: F401  (re-exported: the public import path)
    default_learning_rate,
    load_model_and_tokenizer,
    load_student,
    lora_config,
    run_record,
    save_trained_student,
    set_training_threads,
    training_settings,
)
from distillery.errors import ConfigError

logger = logging.getLogger(__name__)

_SIGNAL_PREFIXES = ("kd_", "action_")


class _SignalCollator:
    """TRL's collator, then the signal's tensors for the same rows (looked up by `kd_row`)."""

    def __init__(self, base, signal: TeacherSignal):
        self.base = base
        self.signal = signal

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [example.pop(KD_ROW) for example in examples if KD_ROW in example]
        batch = self.base(examples)
        # Eval datasets carry no kd_row: they are scored with the plain cross entropy.
        if len(rows) == len(examples) and rows:
            batch = self.signal.collate(batch, rows)
        return batch


class DistillationTrainer(SFTTrainer):
    """`SFTTrainer` whose loss mixes hard labels with a teacher signal (see the module docstring).

    `signal` is a `TeacherSignal`; the default is `SequenceSignal()` (plain SFT). `args` is a
    `DistillationTrainingArguments`; its alpha, temperature and divergence set the loss. Each
    logging step reports `loss_hard` (mean CE) and `loss_soft` (mean T^2 * divergence) next to the total.
    """

    _tag_names = ["trl", "sft", "distillery", "distillation"]
    _name = "Distillation"

    def __init__(self, model, args: DistillationTrainingArguments | None = None, *, signal: TeacherSignal | None = None,
                 train_dataset=None, **kwargs):
        if args is None:
            args = DistillationTrainingArguments(output_dir="distillery-student")
        if not isinstance(args, DistillationTrainingArguments):
            # A DistillationConfig describes a whole run (student, teacher, data): train_student takes it.
            raise TypeError("DistillationTrainer needs DistillationTrainingArguments "
                            "(train_student takes a DistillationConfig)")
        self.signal = signal if signal is not None else SequenceSignal()
        tokenizer = kwargs.get("processing_class")
        rows = None
        if train_dataset is not None and "messages" in train_dataset.column_names:
            if tokenizer is None:
                raise ConfigError("DistillationTrainer needs processing_class (the student's tokenizer) for chat data")
            # Tokenized here, turn by turn as inference does (`distillery.chat_tokens`), not by
            # TRL's whole-conversation chat template, whose merges across turn boundaries would
            # train tokens the student is never asked to continue.
            rows, train_dataset = train_dataset, tokenize_rows_dataset(train_dataset, tokenizer)
            args.assistant_only_loss = False  # the labels already mark the assistant turns
        eval_dataset = kwargs.get("eval_dataset")
        if eval_dataset is not None and "messages" in eval_dataset.column_names:
            kwargs["eval_dataset"] = tokenize_rows_dataset(eval_dataset, tokenizer).remove_columns(KD_ROW)
        super().__init__(model, args=args, train_dataset=train_dataset, **kwargs)
        self.data_collator = _SignalCollator(self.data_collator, self.signal)
        if rows is not None:
            # TRL truncated and filtered the sequences: check what it will really train on.
            check_prefix_property(tokenizer, rows.to_list(), self.train_dataset.to_list())
            self.signal.bind_sequences(self.train_dataset)
        self._place_teacher()

    # -- plumbing ---------------------------------------------------------------------------

    def set_signal(self, signal: TeacherSignal) -> None:
        """Swap the teacher signal (e.g. once a sidecar has been computed from this trainer's data)."""
        self.signal = signal
        self.data_collator.signal = signal
        if "source_row" in self.train_dataset.column_names:
            signal.bind_sequences(self.train_dataset)
        self._place_teacher()

    def _place_teacher(self) -> None:
        if not isinstance(self.signal, OnlineTeacherSignal):
            return
        # Like TRL's GKD trainer: the teacher is prepared for evaluation only (no DDP wrapper, no
        # optimizer), on this process's device, or sharded by DeepSpeed for large teachers.
        if self.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed

            self.signal.model = prepare_deepspeed(self.signal.model, self.accelerator)
        else:
            self.signal.model = self.accelerator.prepare_model(self.signal.model, evaluation_mode=True)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if KD_ROW not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, KD_ROW]

    def _accepts_logits_to_keep(self, model) -> bool:
        if not hasattr(self, "_logits_to_keep"):
            import inspect

            base = self.accelerator.unwrap_model(model)
            base = base.get_base_model() if hasattr(base, "get_base_model") else base
            teacher = getattr(self.signal, "model", None)
            models = [base] + ([self.accelerator.unwrap_model(teacher)] if teacher is not None else [])
            self._logits_to_keep = all(
                "logits_to_keep" in inspect.signature(type(m).forward).parameters for m in models
            )
        return self._logits_to_keep

    def _log_metric(self, name: str, value: float) -> None:
        mode = "train" if self.model.training else "eval"
        value = torch.tensor(float(value), device=self.accelerator.device)
        self._metrics[mode][name].append(self.accelerator.gather_for_metrics(value).mean().item())

    def _count_tokens(self, inputs: dict[str, Any]) -> None:
        """Keep SFTTrainer's `num_tokens` metric (what the KD benchmark divides by time)."""
        if not self.model.training or "attention_mask" not in inputs:
            return
        count = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
        self._total_train_tokens += count // self._tp_size
        self._metrics["train"]["num_tokens"] = [self._total_train_tokens]

    def _normalise(self, mean_loss: torch.Tensor, kept: int, num_items_in_batch) -> torch.Tensor:
        """Turn a per-micro-batch mean into what Trainer expects under gradient accumulation.

        When Trainer passes `num_items_in_batch` (label tokens across all accumulated micro
        batches and ranks), it does not divide the loss by the accumulation steps itself: the
        loss must be sum / num_items, as SFTTrainer's own loss is.
        """
        if num_items_in_batch is None:
            return mean_loss
        loss = mean_loss * kept / torch.as_tensor(num_items_in_batch, device=mean_loss.device).clamp(min=1)
        if self.args.average_tokens_across_devices:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return loss

    # -- the loss ---------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        signal_inputs = {k: inputs.pop(k) for k in list(inputs) if k.startswith(_SIGNAL_PREFIXES)}
        kind = self.signal.kind
        plain = (
            kind == "sequence"
            or not model.training  # held-out loss is the plain CE: comparable across signals
            or (kind == "sparse" and "kd_topk_ids" not in signal_inputs)
        )
        if kind == "action" and model.training:
            return self._action_loss(model, inputs, signal_inputs, return_outputs, num_items_in_batch)
        if plain:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

        labels = inputs["labels"]
        # Align labels with the logits: logits[:, t] predicts token t + 1, so labels move one step
        # left and the last position gets none.
        shifted = F.pad(labels[:, 1:], (0, 1), value=-100)
        kept = shifted != -100
        # Project only the positions that carry a loss through the LM head, for student and
        # teacher alike (`logits_to_keep` with a boolean mask; TRL's fused head does the same for
        # SFT). In agent transcripts most tokens are system prompt, tool schemas and tool results,
        # and at a 32k+ vocabulary the LM head is most of a small model's compute. It goes through
        # the model's own forward, so DDP/FSDP hooks and PEFT wrappers see an ordinary call.
        keep = kept if self._accepts_logits_to_keep(model) else None
        forward_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        forward_inputs["use_cache"] = False
        if keep is not None:
            forward_inputs["logits_to_keep"] = keep
        outputs = model(**forward_inputs)
        if keep is not None:  # (N, V) rows of kept tokens -> one sequence of N tokens
            logits, targets = outputs.logits.reshape(1, -1, outputs.logits.size(-1)), shifted[kept].unsqueeze(0)
        else:
            logits, targets = outputs.logits, shifted
        options = dict(
            temperature=self.args.temperature,
            divergence=self.args.divergence,
            beta=self.args.jsd_beta,
            chunk_size=self.args.kd_chunk_size,
            return_components=True,
        )
        if kind == "dense":
            teacher_logits = self.signal.logits(inputs["input_ids"], inputs.get("attention_mask"), keep=keep)
            if keep is not None:
                teacher_logits = teacher_logits.reshape(1, -1, teacher_logits.size(-1))
            vocab = min(logits.size(-1), teacher_logits.size(-1))
            if self.signal.vocab_size is not None:
                vocab = min(vocab, self.signal.vocab_size)
            if logits.size(-1) != vocab:
                logits = logits[..., :vocab]
            if teacher_logits.size(-1) != vocab:
                teacher_logits = teacher_logits[..., :vocab]
            loss, parts = kd_loss(logits, teacher_logits, targets, alpha=self.args.alpha, **options)
        else:  # sparse
            device = logits.device
            ids, logprobs, has_target = (signal_inputs[k].to(device) for k in ("kd_topk_ids", "kd_topk_logprobs", "kd_mask"))
            if keep is not None:
                ids, logprobs, has_target = ids[kept].unsqueeze(0), logprobs[kept].unsqueeze(0), has_target[kept].unsqueeze(0)
            # Tokens without a teacher entry are trained on the hard label alone (alpha = 1).
            alpha = torch.where(has_target, self.args.alpha, 1.0).float()
            loss, parts = sparse_kd_loss(
                logits, ids, logprobs, targets, alpha=alpha, tail=self.args.sparse_tail, **options
            )
        loss = self._normalise(loss, parts["tokens"], num_items_in_batch)

        self._log_metric("loss_hard", parts["hard"])
        self._log_metric("loss_soft", parts["soft"])
        with torch.no_grad():
            correct = (logits.argmax(-1) == targets) & (targets != -100)
            self._log_metric("mean_token_accuracy", correct.sum().item() / max(kept.sum().item(), 1))
        self._count_tokens(inputs)
        return (loss, outputs) if return_outputs else loss

    def _action_loss(self, model, inputs, signal_inputs, return_outputs, num_items_in_batch):
        """alpha * CE on the trajectory + (1 - alpha) * sum_a p_T(a) NLL_S(a), mean over states."""
        hard = super().compute_loss(model, inputs, return_outputs=False, num_items_in_batch=num_items_in_batch)
        if "action_input_ids" not in signal_inputs or self.args.alpha == 1.0:
            return (hard, None) if return_outputs else hard
        action_labels = signal_inputs["action_labels"]
        shifted = F.pad(action_labels[:, 1:], (0, 1), value=-100)
        logits = model(
            input_ids=signal_inputs["action_input_ids"],
            attention_mask=signal_inputs["action_attention_mask"],
            use_cache=False,
        ).logits
        logprobs = sequence_logprob(logits, shifted, chunk_size=self.args.kd_chunk_size)  # (N,)
        states = signal_inputs["action_state"].to(logprobs.device)
        probs = signal_inputs["action_prob"].to(logprobs.device)
        num_states = int(states.max().item()) + 1
        counts = torch.bincount(states, minlength=num_states)
        width = int(counts.max().item())
        slot = torch.zeros_like(states)
        for s in range(num_states):  # position of each action within its state
            slot[states == s] = torch.arange(int(counts[s].item()), device=states.device)
        matrix = logprobs.new_zeros(num_states, width).index_put((states, slot), logprobs)
        teacher = probs.new_zeros(num_states, width).index_put((states, slot), probs)
        mask = torch.zeros(num_states, width, dtype=torch.bool, device=states.device).index_put(
            (states, slot), torch.ones_like(states, dtype=torch.bool)
        )
        action = action_distribution_loss(matrix, teacher, mask)
        if num_items_in_batch is not None:  # Trainer will not divide by the accumulation steps
            action = action / self.current_gradient_accumulation_steps
        self._log_metric("loss_action", action.item())
        loss = self.args.alpha * hard + (1.0 - self.args.alpha) * action
        return (loss, None) if return_outputs else loss


def train_student(
    student: Any,
    data: Any,
    *,
    out: str | Path,
    teacher: Any = None,
    sidecar: str | Path | None = None,
    config: DistillationConfig | None = None,
    callbacks: list | None = None,
    **overrides: Any,
) -> Path:
    """Train a student and write a standard Hugging Face model directory to `out`; returns `out`.

    student: a URI (`world:student-xs`, `hf:./dir`), a model directory, or `(model, tokenizer)`.
    data: HF chat-format rows (`messages` + `tools`): a .jsonl/.parquet file, a saved dataset,
        a `Dataset`, or `DistillationSample`s / `Trajectory`s.
    teacher: needed for signal "online" (a local model with the same tokenizer) and for "sparse"
        when no `sidecar` is given (its top-`topk` logprobs are then computed once, offline, into
        `out/teacher.topk.parquet`).
    sidecar: a `.topk.parquet` from `distillery build --sidecar topk`; by default the one next to
        a data file (`train.jsonl` -> `train.topk.parquet`) is used when it exists.
    config: the run's options (`DistillationConfig`: signal, loss, steps, learning rate, LoRA,
        resume, threads, self-check; each field documents itself). Keyword arguments named like its
        fields override it: `train_student(..., config=base, max_steps=10)`.
    callbacks: `transformers.TrainerCallback`s for the trainer.

    With `lora`, the adapter is merged into the weights that are written, so the output loads like
    any model (the adapter alone is kept in `out/adapter`). With `resume`, training continues from
    the last checkpoint in `out/checkpoints` (the step count carries on).

    Writes `out/config.json` + `model.safetensors` + tokenizer files (with the chat template),
    loadable by `load_model("hf:<out>")` and vLLM, and `out/distillation.json` (the settings and
    the loss log).
    """
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint

    config = replace(config or DistillationConfig(), **overrides)
    signal = config.signal
    if signal not in OFFLINE_SIGNALS:
        raise ConfigError(f"train_student trains {', '.join(OFFLINE_SIGNALS)}; signal {signal!r} trains with "
                          "distillery.distill.on_policy.train_on_policy")
    out = Path(out)
    checkpoints = out / "checkpoints"
    model, tokenizer = load_student(student, config)
    dataset = load_training_data(data)
    if not isinstance(dataset, Dataset):
        raise ConfigError("training data must be a map-style dataset")

    if signal == "sparse" and sidecar is None and isinstance(data, (str, Path)) and Path(data).is_file():
        beside = Path(data).with_suffix(".topk.parquet")
        sidecar = beside if beside.exists() else None
    if signal == "action" and isinstance(data, (str, Path)) and Path(data).is_file():
        dataset = attach_action_file(dataset, Path(data).with_suffix(".actions.jsonl"))

    teacher_model = teacher_tokenizer = None
    if signal in ("online", "sparse") and teacher is not None:
        teacher_model, teacher_tokenizer = load_model_and_tokenizer(teacher, what="teacher")
    if signal == "online" and teacher_model is None:
        raise ConfigError("--signal online needs --teacher (a local model that shares the student's tokenizer)")
    if signal == "sparse" and sidecar is None and teacher_model is None:
        raise ConfigError("--signal sparse needs --sidecar (top-k Parquet) or --teacher to compute one")

    loss_options = {spec.name: getattr(config, spec.name) for spec in fields(LossOptions)}
    arguments = DistillationTrainingArguments(
        **loss_options, max_length=config.max_length, **training_settings(checkpoints, config, student, model)
    )
    peft_config = lora_config(config.lora_r, config.lora_alpha) if config.lora else None

    if signal == "online":
        signal_obj: TeacherSignal = OnlineTeacherSignal(
            teacher_model, teacher_tokenizer=teacher_tokenizer, student_tokenizer=tokenizer
        )
    elif signal == "sparse":
        signal_obj = (
            SparseTopKSignal(sidecar, student_tokenizer=tokenizer) if sidecar is not None else SparseTopKSignal({})
        )
    elif signal == "action":
        signal_obj = ActionSignal(dataset, tokenizer, max_length=config.max_length)
    else:
        signal_obj = SequenceSignal()

    trainer = DistillationTrainer(
        model,
        args=arguments,
        signal=signal_obj,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )

    topk_tokens = 0  # tokens the teacher reads for an in-run top-k sidecar (charged to the ledger)
    if signal == "sparse" and sidecar is None:
        topk_tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
        if teacher_tokenizer is not None and teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ConfigError("--teacher has a different tokenizer; a top-k sidecar must use the student's token ids")
        sidecar = out / "teacher.topk.parquet"
        if not (config.resume and sidecar.exists()) and trainer.accelerator.is_main_process:
            # One process computes and writes the sidecar; the others wait for it below, then read it.
            teacher_model.to(trainer.accelerator.device)
            started = time.perf_counter()
            targets = teacher_topk(teacher_model, trainer.train_dataset, k=config.topk, vocab_size=len(tokenizer))
            write_teacher_topk(sidecar, targets, tokenizer=tokenizer, k=config.topk)
            logger.info("teacher top-%d sidecar: %d rows in %.1fs", config.topk, len(targets), time.perf_counter() - started)
            teacher_model.to("cpu")
        trainer.accelerator.wait_for_everyone()
        trainer.set_signal(SparseTopKSignal(sidecar, student_tokenizer=tokenizer))

    teacher_params = teacher_model.num_parameters() if teacher_model is not None else None

    def ledger_now():  # the run's ledger so far (token counts are already summed over processes)
        return offline_ledger(signal, student_params=model.num_parameters(), teacher_params=teacher_params,
                              training_tokens=int(trainer._total_train_tokens), topk_tokens=topk_tokens)

    watch_ledger(callbacks, ledger_now, trainer.accelerator)
    last = get_last_checkpoint(str(checkpoints)) if config.resume and checkpoints.is_dir() else None
    result = trainer.train(resume_from_checkpoint=last)

    check = save_trained_student(trainer, out, tokenizer, lora=config.lora, rows=dataset.to_list(),
                                 self_check=config.self_check, seed=config.seed)
    if trainer.accelerator.is_main_process:
        ledger = ledger_now()
        summary = {
            "student": str(student) if isinstance(student, (str, Path)) else type(model).__name__,
            "teacher": str(teacher) if isinstance(teacher, (str, Path)) else (None if teacher is None else "object"),
            **trainer.signal.describe(),
            "alpha": config.alpha,
            "temperature": config.temperature,
            "divergence": config.divergence,
            "compute": ledger.to_dict(),
            **run_record(trainer, result, config, examples=len(dataset), resumed_from=last, check=check),
        }
        (out / "distillation.json").write_text(json.dumps(summary, indent=2, default=str))
    # The other ranks wait for the main one's writing and self-check: a rank that leaves the process
    # group early can abort the run's teardown (seen as SIGABRT under torchrun).
    trainer.accelerator.wait_for_everyone()
    return out
