"""What every training run sets up around the trainer: loading models, the default learning rate,
CPU threads, `TrainingArguments`, LoRA, saving the trained student, and the run record's shared fields."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from distillery import registry
from distillery.distill.config import DistillationConfig
from distillery.errors import ConfigError
from distillery.models.hf import SMALL_MODEL_PARAMS

# The trainer's logger name, so the self-check's lines read as they did before this module existed.
logger = logging.getLogger("distillery.distill.trainer")


def _looks_like_uri(value: str) -> bool:
    scheme, sep, _ = value.partition(":")
    return bool(sep) and scheme.isalpha() and len(scheme) > 1


def load_model_and_tokenizer(spec: Any, *, what: str = "student", seed: int | None = None):
    """(model, tokenizer) from a URI (`world:student-xs`, `hf:./dir`), a directory, an object with
    `.model`/`.tokenizer` (an `HFModel`), or a `(model, tokenizer)` pair. `seed` initialises an
    untrained student (a URI `distillery.registry` knows as built from random weights)."""
    if isinstance(spec, tuple) and len(spec) == 2:
        return spec
    if hasattr(spec, "model") and hasattr(spec, "tokenizer"):
        return spec.model, spec.tokenizer
    text = str(spec)
    if _looks_like_uri(text):
        from distillery.models import load_model

        options = {"seed": seed} if seed is not None and registry.is_untrained(text) else {}
        loaded = load_model(text, **options)
        if not (hasattr(loaded, "model") and hasattr(loaded, "tokenizer")):
            raise ConfigError(f"--{what} {text}: training needs local weights (an hf:, a world's or a directory model)")
        return loaded.model, loaded.tokenizer
    path = Path(text)
    if not (path / "config.json").exists():
        raise ConfigError(f"--{what} {text}: not a model URI and not a model directory with config.json")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def default_learning_rate(student: Any, *, lora: bool, parameters: int | None = None) -> float:
    """LoRA 2e-4; an untrained world student (random init) 1e-3; a student pruned from its teacher
    (`distillery student init`, which writes init.json) 1e-3 below `SMALL_MODEL_PARAMS`, 1e-4 above;
    any other pretrained model 2e-5.

    A pruned student has to recover what pruning removed, which a fine-tuning step size does not
    do in a short run; docs/training.md has the learning rates compared on the offline world.
    """
    if lora:
        return 2e-4
    if registry.is_untrained(student):
        return 1e-3
    if _pruned_from_teacher(student):
        return 1e-3 if parameters is not None and parameters < SMALL_MODEL_PARAMS else 1e-4
    return 2e-5


def _pruned_from_teacher(student: Any) -> bool:
    if not isinstance(student, (str, Path)):
        return False
    text = str(student)
    path = Path(text[3:] if text.startswith("hf:") else text).expanduser()
    return (path / "init.json").is_file()


def set_training_threads(model: Any, threads: int) -> None:
    """Set torch's CPU threads: `threads` when > 0; for 0, one thread for a small model on a CPU."""
    if threads == 0 and not torch.cuda.is_available() and model.num_parameters() < SMALL_MODEL_PARAMS:
        # A few-million-parameter model gains nothing from intra-op threads on a CPU, and torch's
        # default oversubscribes cores other work is using: one thread measured up to 15x faster.
        threads = 1
    if threads > 0:
        torch.set_num_threads(threads)


def load_student(student: Any, config: DistillationConfig):
    """(model, tokenizer) of the student to train: torch's CPU threads set for it (`config.threads`),
    and the EOS token as its pad token when it has none."""
    model, tokenizer = load_model_and_tokenizer(student, what="student", seed=config.seed)
    set_training_threads(model, config.threads)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def save_trained_student(trainer: Any, out: Path, tokenizer: Any, *, lora: bool, rows: list[dict[str, Any]],
                         self_check: int, seed: int):
    """Write the trained model (a LoRA adapter merged in) and tokenizer to `out`; run the self-check.

    Returns the `SelfCheck` on the main process (None when skipped, and on the other processes).
    Under DDP every process gets here with the same weights; only the main one writes (and runs
    the self-check), so files are never written twice at once.
    """
    out.mkdir(parents=True, exist_ok=True)
    final = trainer.model
    if lora:
        if trainer.accelerator.is_main_process:
            final.save_pretrained(out / "adapter")
        final = final.merge_and_unload()
    final = trainer.accelerator.unwrap_model(final)
    if not trainer.accelerator.is_main_process:
        return None
    final.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if self_check <= 0:
        return None
    from distillery.distill.self_check import run_self_check

    check = run_self_check(final, tokenizer, rows, samples=self_check, seed=seed)
    logger.info(check.describe())
    if check.warning:
        logger.warning(check.warning)
    return check


def run_record(trainer: Any, result: Any, config: DistillationConfig, *, examples: int, resumed_from: str | None,
               check: Any) -> dict[str, Any]:
    """The fields every signal's `distillation.json` ends with: the run's shared settings and how
    training went (`result` is what `trainer.train()` returned, `check` the `SelfCheck` or None)."""
    return {
        "lora": config.lora,
        "seed": config.seed,
        "learning_rate": trainer.args.learning_rate,
        "batch_size": config.batch_size,
        "examples": examples,
        "global_step": trainer.state.global_step,
        "resumed_from": resumed_from,
        "train_loss": result.training_loss if not math.isnan(result.training_loss) else None,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "self_check": check.to_dict() if check is not None else None,
        "log_history": trainer.state.log_history,
    }


def training_settings(checkpoints: Path, config: DistillationConfig, student: Any, model: Any) -> dict[str, Any]:
    """The `TrainingArguments` every signal's run shares (the on-policy one included), from a `DistillationConfig`.

    The learning rate, when the config leaves it unset, is `default_learning_rate` for this student.
    `config.training_arguments` comes last, so it can override any of them.
    """
    use_cuda = torch.cuda.is_available()
    learning_rate = config.learning_rate
    if learning_rate is None:
        learning_rate = default_learning_rate(student, lora=config.lora, parameters=model.num_parameters())
    settings = dict(
        output_dir=str(checkpoints),
        max_steps=config.max_steps if config.max_steps is not None else -1,
        num_train_epochs=config.epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=2,
        report_to=config.report,
        disable_tqdm=not config.progress,
        bf16=use_cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not use_cuda,
        dataloader_pin_memory=use_cuda,
    )
    return {**settings, **config.training_arguments}


def lora_config(r: int, alpha: int):
    """The LoRA adapter every signal trains with `--lora`: all linear layers, no dropout."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules="all-linear")
