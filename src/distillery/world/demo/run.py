"""The demo's driver: run the stages in order, skip the cached ones, write results.json and the report."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from distillery.world.demo import console as show
from distillery.world.demo.cache import Stages, fingerprint, read_trajectories, weights_fingerprint, write_atomically
from distillery.world.demo.context import DemoContext
from distillery.world.demo.settings import DemoSettings
from distillery.world.demo.stages import STAGES, stage_inputs
from distillery.errors import ConfigError

RESULTS_KIND = "distillery.demo"


class Demo:
    """Runs the stages in order, skipping the ones whose inputs have not changed since they finished."""

    def __init__(self, settings: DemoSettings, console: Console | None = None):
        self.s = settings
        self.out = settings.out
        self.console = console or Console()
        self.ctx = DemoContext(settings, self.console)
        self.stages = Stages(self.out)
        self.keys: dict[str, str] = {}
        self.timings: dict[str, dict[str, Any]] = {}

    def run(self) -> dict[str, Any]:
        started, cpu_started = time.perf_counter(), time.process_time()
        self.print_header()
        if not self.s.local_teacher:
            self.ctx.teacher  # noqa: B018 - loads it now: a missing key or network stops here, before any stage
        self.stages.dir.mkdir(parents=True, exist_ok=True)  # also marks the directory as the demo's (--fresh)
        previous: dict[str, Any] = {"settings": self.stage_settings()}
        for number, (name, title, stage) in enumerate(STAGES, start=1):
            self.console.rule(f"[bold]{number}/{len(STAGES)} {title}")
            key = fingerprint({**previous, **stage_inputs(name, self.s)})
            self.keys[name] = key
            marker = self.stages.cached(name, key)
            if marker is not None:
                self.console.print(f"[dim]cached: inputs unchanged since it finished ({marker['seconds']:.0f}s then); "
                                   f"--fresh starts over[/]")
                self.timings[name] = {"seconds": 0.0, "cached": True, "first_run_seconds": marker["seconds"]}
            else:
                if name == "collect":
                    show.print_query_list(self.console, self.s)
                quiet_library_output()
                stage_started = time.perf_counter()
                summary = stage(self.ctx)
                seconds = time.perf_counter() - stage_started
                marker = self.stages.finish(name, key, summary, seconds)
                self.timings[name] = {"seconds": round(seconds, 1), "cached": False}
            self.ctx.summaries[name] = marker["summary"]
            show.print_stage(self.console, self.s, name, marker["summary"], cached=self.timings[name]["cached"],
                             store_path=self.ctx.store_path)
            previous = {"upstream": key}
        report = self.write_report()
        results = self.results(time.perf_counter() - started, time.process_time() - cpu_started)
        write_atomically(self.ctx.results_path, json.dumps(results, indent=2, default=str) + "\n")
        self.console.rule("[bold]Done")
        show.print_artifacts(self.console, results, out=self.out.resolve(), n_stages=len(STAGES))
        show.print_next_steps(self.console, report=report, config=self.ctx.config_path)
        return results

    def print_header(self) -> None:
        s = self.s
        student = f"pruned from the teacher ({s.trained_student_uri})" if s.pruned else s.student
        self.console.print(f"[bold]distillery demo[/] -> artifacts in [cyan]{self.out.resolve()}[/]")
        self.console.print(
            f"teacher [bold]{s.teacher}[/], student [bold]{student}[/] "
            f"({'quick: tiny budgets' if s.quick else 'full run'}); "
            + ("offline world: no network, no API key" if s.offline_world
               else "local teacher" if s.local_teacher else "hosted teacher: real, billed API calls")
        )
        if not s.local_teacher:
            self.console.print(
                f"[yellow]note:[/] {s.teacher} returns no logits, so the student is trained with "
                "sequence-level KD (SFT on the teacher's trajectories) instead of top-k logit KD."
            )

    def stage_settings(self) -> dict[str, Any]:
        return {"teacher": self.s.teacher, "teacher_weights": weights_fingerprint(self.s.teacher),
                "seed": self.s.seed, "max_tokens": self.s.max_tokens}

    def write_report(self) -> Any:
        """The test split's runs as an eval result (`eval.json`) and its HTML report (`report.html`).

        The figures come from stage 7's saved runs and stage 1's teacher runs; there is no random-router
        run and there are no reference labels (its curve is simulated; confidences are judged by task outcome).
        """
        from distillery.evaluation.evaluate import summarise_runs
        from distillery.evaluation.results import save_results
        from distillery.report import write_report
        from distillery.routing.config import load_cascade_config

        ctx = self.ctx
        tasks, teacher = ctx.with_teacher_runs(ctx.tasks("test"))
        student = read_trajectories(ctx.runs_path("student-test"))
        cascade = read_trajectories(ctx.runs_path("cascade-test"))
        if [t.id for t in tasks] != [t.task_id for t in student] or [t.task_id for t in cascade] != [t.task_id for t in student]:
            raise ConfigError(f"{self.out / 'runs'}: the test runs do not match the test tasks; run with --fresh")
        results = summarise_runs(tasks, load_cascade_config(ctx.config_path),
                                 [self.s.trained_student_uri, self.s.teacher], [student, teacher], cascade,
                                 seed=self.s.seed)
        results["meta"]["tasks"] = (f"world:test n={len(tasks)} seed={self.s.seed} (distillery demo: no random-router "
                                    "run, no reference labels)")
        json_path, _ = save_results(results, self.out / "eval.json")
        return write_report(json_path, ctx.report_path, cascade=ctx.config_path)

    def results(self, wall_s: float, cpu_s: float) -> dict[str, Any]:
        s, ctx = self.s, self.ctx
        settings = asdict(s)
        settings["out"] = str(s.out)
        return {
            "kind": RESULTS_KIND,
            "world": "offline" if s.offline_world else "hosted teacher",
            "label": "offline world" if s.offline_world else f"teacher {s.teacher}",
            "pricing": ("stand-in: world:teacher priced as anthropic:claude-opus-4-6 ([world.teacher]); students by "
                        "what serving their parameters costs ([self_hosted])") if s.offline_world
                       else "prices.toml: list prices, local models by [self_hosted]",
            "settings": settings,
            "signal": s.signal,
            "stages": ctx.summaries,
            "stage_hashes": self.keys,
            # cpu_s is this process's CPU time: on a busy shared machine it says what the run needs when
            # it has the cores to itself (the local models run on one thread each).
            "timing": {"wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1), "stages": self.timings,
                       "cpu_count": os.cpu_count(),
                       "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
            "artifacts": {
                "store": str(ctx.store_path),
                "jsonl": str(ctx.data_path),
                "sidecar": str(ctx.data_path.with_suffix(".topk.parquet")) if s.local_teacher else "-",
                "pruned student": str(ctx.init_dir) if s.pruned else "-",
                "student checkpoint": str(ctx.student_dir),
                "cascade config": str(ctx.config_path),
                "runs": str(self.out / "runs"),
                "results": str(ctx.results_path),
                "eval result": str(self.out / "eval.json"),
                "report": str(ctx.report_path),
            },
        }


def quiet_library_output() -> None:
    """Silence `datasets`' per-map progress bars and transformers' info logs and weight-loading bars.

    They would break up the demo's own stage output; this process-wide setting is what the CLI wants.
    """
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run_demo(settings: DemoSettings, *, fresh: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Run (or resume) the demo into `settings.out`; returns what `results.json` holds.

    `fresh=True` deletes the output directory first. Raises `DistilleryError` for what a user can
    fix (a hosted teacher without its API key, an unreachable network, a missing world teacher).
    """
    out = Path(settings.out)
    if fresh and out.exists():
        if out.is_dir() and not (out / "stages").is_dir() and any(out.iterdir()):
            # Only ever delete a directory the demo made: a typo in --out must not wipe a project.
            raise ConfigError(f"--out {out}: not a demo output directory (no stages/); refusing to delete it")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    return Demo(settings, console).run()


__all__ = ["RESULTS_KIND", "Demo", "quiet_library_output", "run_demo"]
