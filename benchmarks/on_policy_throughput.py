"""Training throughput of SFT, online KD and on-policy distillation, side by side (offline world).

One run trains, in this order and on the same world prompts:

    sft        distillery train --signal sequence   world:student-xs on the expert's trajectories
                                                    (--sft-steps: it is also the on-policy warm start)
    online     distillery train --signal online     world:student-xs, teacher logits on the same data
    on-policy  distillery train --signal on-policy  warm-started from the sft output, world:teacher
                                                    grading the student's own episodes (real tools)

An on-policy episode costs what the student writes: a barely trained student rambles to the
length cap without calling tools, so the warm start must be long enough to write real episodes.

and prints, per method: episodes/s (trajectories trained on per second of `train()`), training
tokens/s (tokens through the student's forward+backward), the tokens the student wrote itself and
the FLOPs of the compute ledger (`distillation.json`, "compute"). Times are the Trainer's
`train_runtime` (model loading and saving excluded). Everything runs on CPU with one torch thread.

    nice -n 19 python benchmarks/on_policy_throughput.py --steps 20 --sft-steps 300 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps of online KD and of on-policy")
    parser.add_argument("--sft-steps", type=int, default=300, help="steps of SFT (the on-policy warm start)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--max-completion-length", type=int, default=256)
    args = parser.parse_args()

    from distillery.distill.config import DistillationConfig, OnPolicyConfig
    from distillery.distill.on_policy import train_on_policy
    from distillery.distill.trainer import chat_rows, train_student
    from distillery.world.expert import solve
    from distillery.world.tasks import generate_tasks

    rows = chat_rows([solve(task) for task in generate_tasks("train", args.tasks, seed=0)])
    common = dict(max_steps=args.steps, batch_size=args.batch_size, seed=0, self_check=0, progress=False, threads=1)
    sft = DistillationConfig(signal="sequence", **{**common, "max_steps": args.sft_steps})
    online = DistillationConfig(signal="online", alpha=0.5, temperature=2.0, **common)
    on_policy = OnPolicyConfig(max_completion_length=args.max_completion_length, learning_rate=1e-4, **common)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "sft": train_student("world:student-xs", rows, out=Path(tmp, "sft"), config=sft),
            "online": train_student("world:student-xs", rows, out=Path(tmp, "online"), teacher="world:teacher",
                                    config=online),
        }
        runs["on-policy"] = train_on_policy(f"hf:{runs['sft']}", out=Path(tmp, "on-policy"), teacher="world:teacher",
                                            data=rows, config=on_policy)
        summaries = {name: json.loads((out / "distillation.json").read_text()) for name, out in runs.items()}

    print(f"offline world, batch {args.batch_size}: sft {args.sft_steps} steps, online and on-policy {args.steps} steps; "
          "CPU, 1 torch thread")
    header = f"{'method':<10} {'episodes/s':>10} {'train tok/s':>11} {'written tok':>11} {'train s':>8} " \
             f"{'student GFLOP':>13} {'teacher GFLOP':>13}"
    print(header)
    for name, summary in summaries.items():
        ledger, runtime = summary["compute"], summary["train_runtime_s"]
        episodes = ledger["episodes"] or summary["global_step"] * args.batch_size
        written = ledger["student_generated_tokens"]
        student_flops = ledger["training_flops"] + (ledger["student_generation_flops"] or 0)
        teacher_flops = ledger["teacher_flops"] or 0
        print(f"{name:<10} {episodes / runtime:>10.2f} {ledger['training_tokens'] / runtime:>11.0f} {written:>11} "
              f"{runtime:>8.1f} {student_flops / 1e9:>13.1f} {teacher_flops / 1e9:>13.1f}")


if __name__ == "__main__":
    main()
