"""KD training throughput and memory: plain SFT vs offline sparse KD vs online dense KD vs TRL's GKD.

For one student/teacher pair, each mode trains the student for a few steps on the same world
data (expert trajectories, HF chat format) and reports training tokens/s and the peak memory the
training loop added (peak resident memory, VmHWM, reset just before `train()`, minus the
resident memory at that moment). Every mode runs in its own fresh Python process. Modes:

    sft      DistillationTrainer, sequence signal (= SFTTrainer's fused cross entropy)
    sparse   DistillationTrainer, offline top-k (k=20) teacher logprobs; computed before timing
    online   DistillationTrainer, online dense teacher logits (no-grad teacher forward per batch)
    gkd      trl.experimental.gkd.GKDTrainer, lmbda=0 (no on-policy sampling), beta=0 (forward KL)

Configs: `world` (the world student-xs and teacher configs, V=1536) and `wide32k` (wider models
whose output layer has a 32,768-token vocabulary; the token ids come from the world tokenizer,
so the logits, loss and memory are those of a 32k vocabulary).

A second table isolates the loss: peak extra memory of one forward+backward of the KD loss on
(B, T, 32768) logits, for our chunked `kd_loss`, a dense unchunked reference implementation and
TRL GKD's `generalized_jsd_loss`.

Weights are randomly initialised from the configs: speed and memory do not depend on them.
Everything runs on CPU with one torch thread (a shared 2-core box); figures are ratios measured
side by side in one run.

    python benchmarks/kd_train.py                 # both configs, all modes, loss memory
    python benchmarks/kd_train.py --steps 6 --configs world
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODES = ("sft", "sparse", "online", "gkd")
CONFIGS = {
    # name: (student overrides, teacher overrides) applied to the shipped world configs
    "world": ({}, {}),
    "wide32k": (
        {"vocab_size": 32768, "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 4},
        {"vocab_size": 32768, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 4},
    ),
}


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def start_peak_window() -> float:
    """Reset the kernel's peak-RSS counter (Linux) and return the current RSS in MiB."""
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # 5 = reset VmHWM, the peak resident set size
    return _status_mib("VmRSS")


def peak_mib() -> float:
    return _status_mib("VmHWM")


def build_models(config_name: str):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from distillery.world.models import load_world_tokenizer, world_config_path

    student_over, teacher_over = CONFIGS[config_name]
    models = []
    for name, over in (("student-xs", student_over), ("teacher", teacher_over)):
        config = LlamaConfig.from_json_file(str(world_config_path(name)))
        for key, value in over.items():
            setattr(config, key, value)
        torch.manual_seed(0)
        models.append(AutoModelForCausalLM.from_config(config, dtype=torch.float32))
    return load_world_tokenizer(), models[0], models[1]


def world_rows(n: int):
    from distillery.distill.trainer import chat_rows
    from distillery.world.expert import solve
    from distillery.world.tasks import generate_tasks

    return chat_rows([solve(task) for task in generate_tasks("train", n, seed=3)])


class _Timer:
    """Trainer callback: wall time of every optimizer step."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer.started = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                timer.seconds.append(time.perf_counter() - timer.started)

        self.seconds: list[float] = []
        self.callback = Callback()


class _TokenCounter:
    """Wraps a collator and records the (non-padding) tokens of every batch it builds."""

    def __init__(self, base):
        self.base, self.tokens = base, []

    def __call__(self, examples):
        batch = self.base(examples)
        self.tokens.append(int(batch["attention_mask"].sum()))
        return batch

    def __getattr__(self, name):
        return getattr(self.base, name)


def worker(mode: str, config_name: str, steps: int, warmup: int, batch_size: int) -> dict:
    import torch
    from datasets import Dataset

    torch.set_num_threads(1)
    tokenizer, student, teacher = build_models(config_name)
    dataset = Dataset.from_list(world_rows(batch_size * (steps + warmup)))
    common = dict(
        output_dir="/tmp/kd_train_bench", max_steps=steps + warmup, per_device_train_batch_size=batch_size,
        learning_rate=1e-3, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
        logging_steps=1000, seed=0, max_length=512, bf16=False,
    )
    timer = _Timer()
    from distillery.distill.training_arguments import DistillationTrainingArguments
    from distillery.distill.signals import OnlineTeacherSignal, SequenceSignal, SparseTopKSignal, teacher_topk
    from distillery.distill.trainer import DistillationTrainer

    args = DistillationTrainingArguments(**common, alpha=0.5, temperature=1.0)
    # No student_tokenizer: the loss runs over the model's whole output layer (32k for wide32k).
    signal = OnlineTeacherSignal(teacher) if mode == "online" else SequenceSignal()
    trainer = DistillationTrainer(student, args=args, signal=signal, train_dataset=dataset,
                                  processing_class=tokenizer, callbacks=[timer.callback])
    if mode == "sparse":  # the offline pass a server (or `distillery build`) does once
        trainer.set_signal(SparseTopKSignal(teacher_topk(teacher, trainer.train_dataset, k=20)))
        del teacher
    if mode == "gkd":
        # GKD gets exactly the same tokenized batches (same tokens, same assistant-only labels).
        from trl.experimental.gkd import GKDConfig, GKDTrainer
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        tokenized = trainer.train_dataset.select_columns(["input_ids", "labels"])
        args = GKDConfig(**common, lmbda=0.0, beta=0.0, temperature=1.0, seq_kd=False, gradient_checkpointing=False)
        trainer = GKDTrainer(student, teacher_model=teacher, args=args, train_dataset=tokenized,
                             processing_class=tokenizer, callbacks=[timer.callback],
                             data_collator=DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id))
    counter = _TokenCounter(trainer.data_collator)
    trainer.data_collator = counter
    baseline = start_peak_window()
    trainer.train()
    peak = peak_mib()
    timed_tokens = sum(counter.tokens[warmup : warmup + steps])
    timed_seconds = sum(timer.seconds[warmup : warmup + steps])
    return {
        "mode": mode, "config": config_name, "vocab": student.config.vocab_size, "steps": steps,
        "tokens_per_s": timed_tokens / timed_seconds, "tokens_per_step": timed_tokens / steps,
        "seconds_per_step": timed_seconds / steps, "train_peak_extra_mib": peak - baseline,
    }


def loss_worker(kind: str, batch: int, length: int, vocab: int) -> dict:
    kind, _, chunk = kind.partition("@")
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(0)
    student = torch.randn(batch, length, vocab, requires_grad=True)
    teacher = torch.randn(batch, length, vocab)
    labels = torch.randint(0, vocab, (batch, length))
    labels[:, : length // 4] = -100  # a prompt that carries no loss
    from trl.experimental.gkd import GKDTrainer

    from distillery.distill.losses import kd_loss

    baseline = start_peak_window()
    started = time.perf_counter()
    if kind == "chunked":
        loss = kd_loss(student, teacher, labels, alpha=0.5, temperature=2.0, chunk_size=int(chunk or 1024))
    elif kind == "dense":  # the textbook implementation: full-size softmaxes, autograd keeps them
        mask = labels != -100
        s, t = F.log_softmax(student / 2.0, -1), F.log_softmax(teacher / 2.0, -1)
        kl = (t.exp() * (t - s)).sum(-1)
        ce = F.cross_entropy(student.view(-1, vocab), labels.view(-1), reduction="none").view_as(kl)
        loss = ((0.5 * ce + 0.5 * 4.0 * kl) * mask).sum() / mask.sum()
    else:  # TRL GKD's loss (beta=0: forward KL), soft term only
        loss = GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=0.0, temperature=2.0)
    loss.backward()
    seconds = time.perf_counter() - started
    return {"loss": kind + (f"@{chunk}" if chunk else ""), "vocab": vocab, "tokens": batch * length, "peak_extra_mib": peak_mib() - baseline,
            "logits_mib": student.numel() * 4 / 2**20, "seconds": seconds}


def spawn(args: list[str]) -> dict:
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=1800)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"worker {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--loss-shape", type=int, nargs=3, default=[4, 512, 32768], metavar=("B", "T", "V"))
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[1024, 256, 64],
                        help="kd_loss chunk sizes (rows) to measure in the loss-only table")
    parser.add_argument("--skip-train", action="store_true", help="only the loss-only memory table")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "CONFIG"), help=argparse.SUPPRESS)
    parser.add_argument("--loss-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.steps, args.warmup, args.batch_size)))
        return
    if args.loss_worker:
        print(json.dumps(loss_worker(args.loss_worker, *args.loss_shape)))
        return

    results = []
    print(f"CPU, 1 torch thread; {args.steps} timed steps after {args.warmup} warm-up, "
          f"batch {args.batch_size}")
    for config in [] if args.skip_train else args.configs:
        rows = {}
        for mode in args.modes:
            rows[mode] = spawn(["--worker", mode, config, "--steps", str(args.steps), "--warmup", str(args.warmup),
                                "--batch-size", str(args.batch_size)])
            results.append(rows[mode])
        base = rows.get("sft")
        print(f"\n[{config}] V={next(iter(rows.values()))['vocab']}")
        print(f"{'mode':8} {'tokens/s':>10} {'x SFT':>7} {'s/step':>8} {'tok/step':>9} {'peak +MiB':>10}")
        for mode, r in rows.items():
            ratio = r["tokens_per_s"] / base["tokens_per_s"] if base else float("nan")
            print(f"{mode:8} {r['tokens_per_s']:10.0f} {ratio:7.2f} {r['seconds_per_step']:8.2f} "
                  f"{r['tokens_per_step']:9.0f} {r['train_peak_extra_mib']:10.0f}")
        if "online" in rows and "gkd" in rows:
            print(f"online KD vs TRL GKD: {rows['online']['tokens_per_s'] / rows['gkd']['tokens_per_s']:.2f}x tokens/s")
        if "sparse" in rows and base:
            print(f"offline sparse KD vs plain SFT: {rows['sparse']['tokens_per_s'] / base['tokens_per_s']:.2f}x tokens/s")

    b, t, v = args.loss_shape
    print(f"\nloss only, one forward+backward on ({b}, {t}, {v}) logits ({b * t * v * 4 / 2**20:.0f} MiB each):")
    kinds = [f"chunked@{size}" for size in args.chunk_sizes] + ["dense", "gkd"]
    losses = {kind: spawn(["--loss-worker", kind, "--loss-shape", str(b), str(t), str(v)]) for kind in kinds}
    results.extend(losses.values())
    for kind, r in losses.items():
        print(f"{kind:13} peak extra {r['peak_extra_mib']:7.0f} MiB  "
              f"({r['peak_extra_mib'] / losses['dense']['peak_extra_mib']:.2f}x dense)  {r['seconds']:.2f}s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
