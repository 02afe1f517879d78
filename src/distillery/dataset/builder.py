"""`DatasetBuilder`: trajectories in, fine-tuning files out, every step counted.

    builder = DatasetBuilder(format="openai", success_only=True, dedup="near", split=(0.8, 0.1, 0.1),
                             stratify="tier", tokenizer=student_tokenizer)
    report = builder.build(read_store("store.db", model="anthropic:claude-opus-4-6"), "data/")

The order of operations, and why:
1. structural checks (unanswered calls, unparsable arguments): bad input is an error, listing
   every problem, unless `skip_invalid` drops those examples (each reported);
2. action distributions are estimated from everything selected, before rejection sampling, so
   they describe the teacher's policy rather than its successes;
3. success-only, render (reasoning policy, weights), invalid-call, decontamination, dedup and
   token filters, each reporting how many examples it removed;
4. the task-grouped, stratified split, then per split: records, validation with OpenAI's format
   rules, and sidecars;
5. all files written to temp files and renamed together (`StagedFiles`), so a failed build leaves
   nothing half-written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.chat_tokens import check_prefix_property, tokenize_rows
from distillery.dataset import filters as F
from distillery.dataset.formats import FORMATS, StagedFiles, check_format, write_jsonl, write_records
from distillery.dataset.render import REASONING_CHOICES, ReasoningPolicy, hf_record, tool_dicts, training_messages
from distillery.dataset.sidecar import (
    SidecarError,
    TopKReport,
    action_rows,
    attach_action_distributions,
    build_topk_sidecar,
    check_shared_vocabulary,
    topk_header_path,
    topk_parquet_bytes,
)
from distillery.dataset.sources import DatasetInputError, Example, Source, Unreadable, as_examples, structural_problems
from distillery.dataset.splits import SPLIT_NAMES, split_examples
from distillery.dataset.stats import CostEstimate, TokenCounter, TokenStats, estimate_cost, template_messages
from distillery.dataset.validate import DEFAULT_TOKEN_LIMIT, MIN_EXAMPLES, function_name_problem, validate_records
from distillery.errors import ConfigError
from distillery.formats.openai import FUNCTION_KEYS, fine_tuning_record
from distillery.trajectory import DistillationSample, Trajectory

DEDUP_CHOICES = ("exact", "near", "none")


class ProblemsError(DatasetInputError):
    """Several inputs are bad; `problems` lists each as `origin: field: problem`."""

    def __init__(self, summary: str, problems: list[str]):
        super().__init__(summary)
        self.problems = problems


@dataclass
class BuildReport:
    """What a build did: files, counts per filter, token statistics, cost, sidecars, warnings."""

    format: str
    files: list[Path] = field(default_factory=list)
    inputs: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    splits: dict[str, TokenStats] = field(default_factory=dict)
    cost: CostEstimate | None = None
    topk: dict[str, TopKReport] = field(default_factory=dict)
    action_rows: dict[str, int] = field(default_factory=dict)
    # Per split, with --tokenizer: (conversations, training sequences) after the prefix check.
    sequences: dict[str, tuple[int, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def examples(self) -> int:
        return sum(s.examples for s in self.splits.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "files": [str(p) for p in self.files],
            "inputs": self.inputs,
            "removed": self.removed,
            "skipped": self.skipped,
            "splits": {name: vars(stats) for name, stats in self.splits.items()},
            "cost": None
            if self.cost is None
            else {**vars(self.cost), "usd": self.cost.usd, "note": "list price from prices.toml"},
            "topk": {
                name: {
                    "path": str(r.path),
                    "k": r.k,
                    "coverage": r.coverage,
                    "target_positions": r.target_positions,
                    "assistant_tokens": r.assistant_tokens,
                    "bytes": r.bytes,
                    "bytes_per_token": r.bytes_per_token,
                }
                for name, r in self.topk.items()
            },
            "action_rows": self.action_rows,
            "sequences": {name: {"conversations": c, "training_sequences": n} for name, (c, n) in self.sequences.items()},
            "warnings": self.warnings,
        }


class DatasetBuilder:
    """Turns trajectories or `DistillationSample`s into fine-tuning files. Options are described in
    `docs/dataset.md`; every one has a CLI flag of the same name (`distillery build --help`)."""

    def __init__(
        self,
        *,
        format: str = "openai",
        reasoning: ReasoningPolicy = "keep",
        mask_failed_steps: bool = False,
        parallel_tool_calls: bool = True,
        success_only: bool = False,
        status: str = "ok",
        tags: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        since: Any = None,
        until: Any = None,
        drop_invalid_calls: bool = True,
        skip_invalid: bool = False,
        dedup: str = "exact",
        near_threshold: float = 0.9,
        max_tokens: int | None = None,
        decontaminate: str | Path | None = None,
        split: tuple[float, ...] | None = None,
        stratify: str | None = None,
        seed: int = 0,
        tokenizer: Any = None,
        teacher_tokenizer: Any = None,
        topk: int | None = None,
        topk_alignment: str = "exact",
        action_distributions: bool = False,
        epochs: int = 3,
        price_model: str = "openai:gpt-4o-mini",
        token_limit: int = DEFAULT_TOKEN_LIMIT,
        min_examples: int = MIN_EXAMPLES,
    ):
        self.format = check_format(format)
        if isinstance(reasoning, str) and reasoning not in REASONING_CHOICES:
            raise ConfigError(f"unknown reasoning policy {reasoning!r}; choose one of {', '.join(REASONING_CHOICES)}")
        if dedup not in DEDUP_CHOICES:
            raise ConfigError(f"unknown dedup mode {dedup!r}; choose one of {', '.join(DEDUP_CHOICES)}")
        if topk is not None and tokenizer is None:
            raise ConfigError("--sidecar topk needs the student tokenizer (--tokenizer DIR) to align targets")
        if epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {epochs}")
        self.reasoning = reasoning
        self.mask_failed_steps = mask_failed_steps
        self.parallel_tool_calls = parallel_tool_calls
        if status not in F.STATUSES:
            raise ConfigError(f"--status {status!r}: choose one of {', '.join(F.STATUSES)}")
        self.status = status
        self.success_only = success_only
        self.tags, self.models, self.since, self.until = tags, models, since, until
        self.drop_invalid_calls = drop_invalid_calls
        self.skip_invalid = skip_invalid
        self.dedup = dedup
        if not 0 < near_threshold <= 1:  # also refuses NaN
            raise ConfigError(f"--near-threshold must be a Jaccard similarity in (0, 1], got {near_threshold}")
        self.near_threshold = near_threshold
        self.max_tokens = max_tokens
        self.decontaminate = decontaminate
        self.split = split
        self.stratify = stratify
        self.seed = seed
        self.tokenizer = tokenizer
        self.teacher_tokenizer = teacher_tokenizer
        self.topk = topk
        self.topk_alignment = topk_alignment
        self.action_distributions = action_distributions
        self.epochs = epochs
        self.price_model = price_model
        self.token_limit = token_limit
        self.min_examples = min_examples
        self.counter = TokenCounter(tokenizer)

    # -- selection --------------------------------------------------------------------------

    def select(self, items: Iterable[DistillationSample | Trajectory | Example], report: BuildReport) -> dict[str, list[Example]]:
        """Checks, filters, rendering and splitting; returns the examples of each split."""
        unreadable: list[Unreadable] = []
        examples = as_examples(items, unreadable=unreadable)
        report.inputs = len(examples) + len(unreadable)
        if unreadable:  # store rows that do not parse: stop, or with skip_invalid leave them out (the store is untouched)
            problems = [str(u) for u in unreadable]
            if not self.skip_invalid:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise ProblemsError(f"{problems[0]}{more}; the store was not changed; pass --skip-invalid to build "
                                    "without such rows", problems)
            report.removed["unreadable store row (--skip-invalid)"] = len(unreadable)
            report.skipped.extend(problems)
            report.warnings.append(f"{len(unreadable)} store row(s) could not be read and were left out; the store "
                                   "was not changed (see skipped)")

        def removed(name: str, result: tuple[list[Example], int]) -> list[Example]:
            kept, count = result
            report.removed[name] = report.removed.get(name, 0) + count
            return kept

        if any(x is not None for x in (self.tags, self.models, self.since, self.until)):
            examples = removed("tag/model/date", F.select(examples, tags=self.tags, models=self.models, since=self.since, until=self.until))
        # Failed, cut-off and unfinished runs are left out before anything judges their structure:
        # a store with failures builds cleanly, and no example ends on a tool result unless asked.
        examples, left_out = F.by_status(examples, self.status)
        for reason, count in left_out.items():
            report.removed[f"{reason} (--status {self.status})"] = count
        examples = self._check_structure(examples, report)

        if self.action_distributions:
            population = [e.trajectory for e in examples if e.trajectory is not None]
            if not population:
                raise ConfigError("--action-dist needs trajectories (with their steps), not bare samples")
            attach_action_distributions(examples, population)

        if self.success_only:
            examples = removed("not successful (--success-only)", F.success_only(examples))
        for e in examples:
            e.messages, e.weights = training_messages(e.sample, reasoning=self.reasoning, mask_failed_steps=self.mask_failed_steps)
        if self.drop_invalid_calls:
            examples, dropped = F.invalid_calls(examples)
            report.removed["invalid tool call (unknown tool or schema)"] = len(dropped)
            report.skipped.extend(f"{e.origin}: {why}" for e, why in dropped)
        if self.decontaminate:
            examples = removed(f"overlaps eval set {Path(self.decontaminate).name}", F.decontaminate(examples, self.decontaminate))
        if self.dedup == "exact":
            examples = removed("exact duplicate", F.dedup_exact(examples))
        elif self.dedup == "near":
            examples = removed("exact duplicate", F.dedup_exact(examples))
            examples = removed(f"near duplicate (Jaccard >= {self.near_threshold:g})", F.dedup_near(examples, threshold=self.near_threshold, seed=self.seed))
        for e in examples:
            # Counted on the OpenAI record, so `build` and `build validate` report the same numbers.
            record = fine_tuning_record(e.messages, e.weights, tool_dicts(e.sample))
            e.tokens = self.counter.count(record["messages"], record.get("tools"))
        if self.max_tokens is not None:
            examples = removed(f"over {self.max_tokens} tokens", F.max_tokens(examples, self.max_tokens))
        if not examples:
            why = ", ".join(f"{name}: {count}" for name, count in report.removed.items() if count) or "none"
            source = f" from {items.name}" if isinstance(items, Source) else ""
            detail = f"{report.inputs} read; removed {why}" if report.inputs else "nothing read: no trajectory matches"
            raise ConfigError(f"empty selection{source}: no examples left to write ({detail})")
        if self.format != "openai" and any(0 in e.weights for e in examples):
            raise ConfigError(
                f"--mask-failed-steps gives some assistant messages weight 0, which only the openai format can "
                f"express; TRL's assistant_only_loss trains every assistant message of the {self.format} format"
            )
        if self.format == "openai":
            dropped = sorted({key for e in examples for spec in e.sample.tools for key in (spec.model_extra or {})
                              if key not in FUNCTION_KEYS})
            if dropped:
                report.warnings.append(
                    f"tool keys {', '.join(dropped)} are not part of OpenAI's function format and are left out of the "
                    "openai files (--format hf keeps them)"
                )
        if self.split:
            return split_examples(examples, self.split, seed=self.seed, stratify=self.stratify)
        return {"train": examples}

    def _check_structure(self, examples: list[Example], report: BuildReport) -> list[Example]:
        kept, problems = [], []
        for e in examples:
            found = structural_problems(e.sample)
            if self.format == "openai":
                found += [f"tools[{k}].function.name: {problem}" for k, spec in enumerate(e.sample.tools)
                          if (problem := function_name_problem(spec.name))]
            if found:
                problems.extend(f"{e.origin}: {p}" for p in found)
            else:
                kept.append(e)
        if problems and not self.skip_invalid:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ProblemsError(f"{problems[0]}{more}; fix the input or pass --skip-invalid to drop such examples", problems)
        report.removed["malformed (--skip-invalid)"] = len(examples) - len(kept)
        report.skipped.extend(problems)
        return kept

    # -- records ----------------------------------------------------------------------------

    def records(self, examples: list[Example]) -> list[dict[str, Any]]:
        out = []
        for e in examples:
            tools = tool_dicts(e.sample)
            if self.format == "openai":
                out.append(fine_tuning_record(e.messages, e.weights, tools, parallel_tool_calls=self.parallel_tool_calls))
            else:
                extra: dict[str, Any] = {"task_id": e.sample.task_id, "trajectory_id": e.sample.trajectory_id}
                if e.sample.action_distributions is not None:
                    # A JSON string: as an Arrow column, the dicts' differing keys would be padded with nulls.
                    extra["action_distributions"] = json.dumps(e.sample.action_distributions, ensure_ascii=False)
                out.append(hf_record(e.messages, tools, **extra))
        return out

    def _validate(self, name: str, examples: list[Example], report: BuildReport) -> None:
        """Our own output must pass OpenAI's format rules; the example minimum is only a warning."""
        openai_rows = [
            (i + 1, fine_tuning_record(e.messages, e.weights, tool_dicts(e.sample), parallel_tool_calls=self.parallel_tool_calls))
            for i, e in enumerate(examples)
        ]
        counts = iter(e.tokens for e in examples)
        # Calls that violate their schemas were dropped already, unless --keep-invalid-calls kept them.
        result = validate_records(openai_rows, source=name, token_limit=self.token_limit, counter=_Precounted(counts),
                                  min_examples=0, check_arguments=self.drop_invalid_calls,
                                  check_names=self.format == "openai")
        if result.problems:
            lines = [f"{examples[p.line - 1].origin}: {p.field}: {p.message}" for p in result.problems]
            hint = "; drop long examples with --max-tokens" if any("token limit" in p.message for p in result.problems) else ""
            more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
            raise ProblemsError(f"{lines[0]}{more}{hint}", lines)
        if name == "train" and len(examples) < self.min_examples:
            report.warnings.append(
                f"train has {len(examples)} examples; OpenAI fine-tuning needs at least {self.min_examples}"
            )

    def _check_prefix(self, examples: list[Example]) -> tuple[int, int]:
        """Tokenize every example as the trainer will, and prove each assistant turn's inference
        prompt is a prefix of its training sequence (`distillery.chat_tokens`)."""
        rows = [{"messages": template_messages(e.messages), "tools": tool_dicts(e.sample)} for e in examples]
        names = [e.origin for e in examples]
        sequences = tokenize_rows(self.tokenizer, rows, names=names)
        check_prefix_property(self.tokenizer, rows, sequences, names=names)
        return len(rows), len(sequences)

    # -- the whole build --------------------------------------------------------------------

    def build(self, items: Iterable[Any], out_dir: str | Path) -> BuildReport:
        """Write `<split>.<ext>` files (and sidecars, and `build.json`) into `out_dir`."""
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise ConfigError(f"--out: {out_dir} exists and is not a directory")
        return self._build(items, {name: out_dir / name for name in SPLIT_NAMES}, out_dir / "build.json")

    def write_file(self, items: Iterable[Any], path: str | Path) -> BuildReport:
        """One file with every selected example (no split); sidecars go next to it."""
        if self.split:
            raise ConfigError("a split writes several files: use DatasetBuilder.build(items, out_dir)")
        path = Path(path)
        suffix = FORMATS[self.format]
        base = path.with_name(path.name[: -len(suffix)]) if path.name.endswith(suffix) else path.with_suffix("")
        return self._build(items, {"train": base}, None, data_path=path)

    def _build(self, items, bases: dict[str, Path], summary: Path | None, data_path: Path | None = None) -> BuildReport:
        report = BuildReport(format=self.format)
        splits = self.select(items, report)
        fingerprint = self._check_topk_inputs(splits)
        staged = StagedFiles()
        all_tokens = 0
        for name, examples in splits.items():
            if not examples:
                report.warnings.append(f"{name} split is empty")
                continue
            self._validate(name, examples, report)
            if self.tokenizer is not None:
                report.sequences[name] = self._check_prefix(examples)
            report.splits[name] = TokenStats.of([e.tokens for e in examples], self.counter.method)
            all_tokens += report.splits[name].total if name == "train" else 0
            base = bases[name]
            target = data_path or base.with_name(base.name + FORMATS[self.format])
            records = self.records(examples)
            staged.add(target, lambda tmp, records=records: write_records(records, tmp, self.format))
            if self.topk is not None:
                topk_path = base.with_name(base.name + ".topk.parquet")
                table, header, topk_report = build_topk_sidecar(
                    examples,
                    topk_path,
                    tokenizer=self.tokenizer,
                    k=self.topk,
                    fingerprint=fingerprint,
                    alignment=self.topk_alignment,
                )
                data = topk_parquet_bytes(table)
                topk_report.bytes = len(data)
                header |= {"bytes": len(data), "bytes_per_target_token": round(topk_report.bytes_per_token, 3)}
                staged.add_bytes(topk_path, data)
                staged.add_text(topk_header_path(topk_path), json.dumps(header, indent=2) + "\n")
                report.topk[name] = topk_report
            if self.action_distributions:
                rows = action_rows(examples)
                staged.add(base.with_name(base.name + ".actions.jsonl"), lambda tmp, rows=rows: write_jsonl(rows, tmp))
                report.action_rows[name] = len(rows)
        report.cost = estimate_cost(all_tokens, epochs=self.epochs, model=self.price_model)
        if summary is not None:
            # The file list is known only after commit; the summary lists what will be written.
            report.files = [path for path, _ in staged.pending] + [summary]
            staged.add_text(summary, json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        report.files = staged.commit()
        return report

    def _check_topk_inputs(self, splits: dict[str, list[Example]]) -> str | None:
        if self.topk is None:
            return None
        examples = [e for split in splits.values() for e in split]
        if not any(e.trajectory and any(s.logprobs for s in e.trajectory.steps) for e in examples):
            raise SidecarError(
                "--sidecar topk: no selected trajectory has token logprobs; collect with logprobs and top "
                "alternatives from a server that returns them (vLLM, an hf: or world: teacher); Anthropic does not"
            )
        teacher = self.teacher_tokenizer or _teacher_tokenizer_from_models({e.sample.model for e in examples})
        if teacher is None:
            raise SidecarError(
                "--sidecar topk: cannot check that teacher and student share a vocabulary; pass the teacher's "
                "tokenizer (--teacher-tokenizer DIR); sparse logit targets need a shared vocabulary"
            )
        return check_shared_vocabulary(teacher, self.tokenizer)


class _Precounted:
    """A TokenCounter stand-in that hands back counts already computed, in order."""

    def __init__(self, counts):
        self._counts = counts

    def count(self, messages, tools) -> int:
        return next(self._counts)


def _teacher_tokenizer_from_models(models: set[str]) -> Any:
    """The teacher's tokenizer when every trajectory names the same local model: an `hf:<dir>`, or a
    model of a registered family whose models share one tokenizer (`distillery.registry`)."""
    if len(models) != 1:
        return None
    uri = next(iter(models))
    if uri.startswith("hf:") and Path(uri[3:]).is_dir():
        from distillery.dataset.stats import load_tokenizer

        return load_tokenizer(uri[3:])
    from distillery import registry

    return registry.tokenizer_for(uri)


def build_finetune_jsonl(
    samples: Iterable[DistillationSample | Trajectory],
    path: str | Path,
    format: str = "openai",
    **options: Any,
) -> BuildReport:
    """Write `samples` to one fine-tuning file at `path` (OpenAI JSONL by default).

    `format` is "openai", "hf" or "parquet"; `options` are `DatasetBuilder`'s. Raises a
    `DistilleryError` naming the sample and field for malformed input, and writes nothing then.
    """
    return DatasetBuilder(format=format, **options).write_file(samples, path)
