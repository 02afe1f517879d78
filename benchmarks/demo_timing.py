"""How long `distillery demo` takes, and what batching the local models buys (offline world).

    python benchmarks/demo_timing.py                     # both parts, default sizes
    python benchmarks/demo_timing.py --skip-demo --tasks 48

1. Teacher collection on the same world tasks, side by side: `TeacherCollector` over the plain
   `HFModel` (one conversation per call, calls serialised by the model's lock) against the same
   model wrapped in `distillery.models.batching.BatchingModel` (concurrent calls answered by one
   `generate_many` batch). Same tasks, same greedy decoding: prints both wall times and the ratio,
   and checks that both produced the same answers.
2. The demo itself, in a subprocess as a user runs it: a first run into a fresh directory, then a
   re-run with every stage cached. Prints both wall times, the per-stage seconds from
   results.json, the machine's core count and the load average before and after (the machine is
   shared: the load says how much of it the demo had).
3. With --train-data DEMO_DIR (a finished demo's output): its training stage, 40 steps of the
   pruned student, on 1 and on 2 torch threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def collection(teacher: str, n_tasks: int) -> None:
    from distillery.collect import TeacherCollector
    from distillery.demo import world_split
    from distillery.models.batching import BatchingModel
    from distillery.models import load_model
    from distillery.world import SYSTEM_PROMPT
    from distillery.world.tools import toolbox

    tasks = world_split("train", n_tasks, seed=123)
    model = load_model(teacher, max_new_tokens=192)
    timings, answers = {}, {}
    for name, wrapped in (("plain HFModel", model), ("BatchingModel", BatchingModel(model, max_batch=32))):
        collector = TeacherCollector(wrapped, toolbox(), system=SYSTEM_PROMPT, concurrency=32, max_tokens=192,
                                     logprobs=True, top_logprobs=8, progress=False)
        started = time.perf_counter()
        result = collector.collect(tasks)
        timings[name] = time.perf_counter() - started
        answers[name] = {t.task_id: t.final_answer for t in result.trajectories}
        print(f"  {name:<16} {n_tasks} tasks in {timings[name]:6.1f}s  ({result.summary()})")
    same = sum(answers["plain HFModel"][k] == answers["BatchingModel"][k] for k in answers["plain HFModel"])
    print(f"  batching is x{timings['plain HFModel'] / timings['BatchingModel']:.2f} faster; "
          f"{same}/{n_tasks} identical final answers")


def demo(extra: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        command = [sys.executable, "-m", "distillery.cli", "demo", "--out", str(out), *extra]
        for label in ("first run", "re-run (cached)"):
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            wall = time.perf_counter() - started
            if done.returncode != 0:
                print(done.stdout[-3000:], done.stderr[-3000:])
                raise SystemExit(f"demo failed ({label})")
            results = json.loads((out / "results.json").read_text())
            stages = ", ".join(f"{name} {t['seconds']:.0f}s" for name, t in results["timing"]["stages"].items())
            print(f"  {label:<16} {wall:6.1f}s wall  [{stages}]  load avg {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
        rows = {row["name"]: row for row in results["stages"]["evaluate"]["rows"]}
        print(f"  summary ({results['label']}; {results['pricing']}): " + "; ".join(
            f"{name} success {row['success']:.2f}, ${row['cost_per_1k_usd']:.2f}/1k" for name, row in rows.items()))
        cascade = rows["cascade"]
        saving = cascade["saving_vs_teacher"]
        print(f"  cascade escalated {cascade['task_escalation_rate']:.0%} of tasks "
              f"({cascade['step_escalation_rate']:.0%} of steps), cost "
              + ("n/a (teacher unpriced)" if saving is None else f"{1 - saving:.0%} of teacher-only"))


def training_threads(demo_dir: str, steps: int = 40) -> None:
    """The demo's training stage on 1 and on 2 torch threads, twice each, alternating: the same KD
    run of the pruned student (`DIR/student-init`) on `DIR/data/train.jsonl`. The threads go
    through `DistillationConfig.threads`, which the trainer applies after loading the model."""
    import contextlib
    import io

    from distillery.demo import quiet_library_output
    from distillery.distill.config import DistillationConfig
    from distillery.distill.trainer import train_student

    quiet_library_output()
    root = Path(demo_dir)
    start = f"hf:{root / 'student-init'}" if (root / "student-init").is_dir() else "world:student-xs"
    seconds: dict[int, list[float]] = {1: [], 2: []}
    for threads in (1, 2, 1, 2):
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            config = DistillationConfig(signal="sparse", alpha=0.5, temperature=2.0, max_steps=steps, batch_size=16,
                                        max_length=512, progress=False, threads=threads)
            train_student(start, root / "data" / "train.jsonl", out=Path(tmp) / "s", config=config)
            report = json.loads((Path(tmp) / "s" / "distillation.json").read_text())
            seconds[threads].append(report["train_runtime_s"])
        print(f"  {threads} torch thread(s): {steps} steps in {seconds[threads][-1]:5.1f}s "
              f"({seconds[threads][-1] / steps:.3f} s/step, the trainer's own runtime)")
    one, two = min(seconds[1]), min(seconds[2])
    print(f"  best of two: 2 threads take x{two / one:.2f} the time of 1 ({start})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="world:teacher", help="local teacher URI")
    parser.add_argument("--tasks", type=int, default=64, help="world tasks for the collection comparison")
    parser.add_argument("--skip-collection", action="store_true")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--demo-args", default="", help="extra arguments for `distillery demo`, e.g. '--quick'")
    parser.add_argument("--train-data", metavar="DEMO_DIR",
                        help="a finished demo's output directory: time its training stage on 1 vs 2 torch threads")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} (offline world)")
    if not args.skip_collection:
        print(f"1. teacher collection, {args.teacher}, concurrency 32:")
        collection(args.teacher, args.tasks)
    if not args.skip_demo:
        print(f"2. distillery demo {args.demo_args}".rstrip() + ":")
        demo(args.demo_args.split() + (["--teacher", args.teacher] if args.teacher != "world:teacher" else []))
    if args.train_data:
        print(f"3. the demo's KD training stage ({args.train_data}), batch 16:")
        training_threads(args.train_data)


if __name__ == "__main__":
    main()
