"""On-policy distillation of a tool-using agent, on TRL's `DistillationTrainer`.

The student writes its own episodes: it samples a turn, the real tools run on its calls (TRL's
tool loop), it samples the next turn, until it answers. The teacher then scores every token the
student wrote, and the loss is TRL's per-token generalized JSD (beta = 1: the reverse KL
KL(student || teacher), mode-seeking, as in GKD and Qwen3's on-policy stage). Tool-result tokens
are context, not something the student wrote, so TRL's `tool_mask` keeps them out of the loss.

TRL owns the rollout loop and the loss. distillery adds, without a second copy of either:
- prompts from a store or data file, the user's `ToolBox` in TRL's shape, replayed tools
  (`on_policy_data.py`);
- a check that a rollout's tokens are exactly the tokens inference builds (`check_rollout_tokens`);
- the compute ledger (`ledger.py`), counted from each generation batch;
- for a vLLM-served teacher, `ServerOnPolicyTrainer`: TRL's `ServerDistillationTrainer` with tools
  passed through, tool-result tokens masked, and an HTTP-only client (see its docstring).

    from distillery.distill.budget import watch_ledger
from distillery.distill.config import OnPolicyConfig
    from distillery.distill.on_policy import train_on_policy
    train_on_policy("hf:runs/xs-sft", out="runs/xs-onpolicy", teacher="world:teacher",
                    data="data/train.jsonl", config=OnPolicyConfig(max_steps=200))
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from trl import DistillationConfig as TRLDistillationConfig
from trl import DistillationTrainer as TRLDistillationTrainer
from trl.experimental.server_distillation import ServerDistillationConfig, ServerDistillationTrainer
from trl.generation.vllm_client import VLLMClient

from distillery import registry
from distillery.chat_tokens import completion_text, encode
from distillery.distill.budget import watch_ledger
from distillery.distill.config import OnPolicyConfig
from distillery.distill.ledger import ComputeLedger
from distillery.distill.on_policy_data import (
    ServerTeacher,
    ToolStats,
    bridge_tools,
    check_same_tokenizer,
    check_server_tokenizer,
    prompt_rows,
    read_store_rows,
    resolve_teacher,
)
from distillery.errors import ConfigError

logger = logging.getLogger(__name__)


# -- chat format ------------------------------------------------------------------------------


def prepare_tool_parsing(tokenizer: Any) -> None:
    """Give the tokenizer the response parser TRL reads tool calls back with.

    TRL knows the parsers of the chat templates it ships; a Hermes-convention template it does not
    know (the world tokenizer's, `HERMES_CHAT_TEMPLATE`, a fine-tuned Qwen's edited template) writes
    calls exactly as Qwen does (`<tool_call>{json}</tool_call>` ... `<|im_end|>`), so it gets
    TRL's Qwen parser.
    """
    if getattr(tokenizer, "response_template", None) is not None or getattr(tokenizer, "response_schema", None) is not None:
        return
    from trl.chat_template_utils import add_response_schema, qwen3_template

    try:
        add_response_schema(tokenizer)
        return
    except ValueError:
        pass
    template = tokenizer.chat_template or ""
    if "<tool_call>" in template and "<|im_end|>" in template:
        tokenizer.response_template = qwen3_template
        return
    raise ConfigError("the student's chat template is neither one TRL knows nor the Hermes/Qwen convention, so tool "
                      "calls cannot be parsed from rollouts; set tokenizer.response_template (transformers' response "
                      "parsing docs)")


def check_rollout_tokens(trainer: TRLDistillationTrainer) -> str | None:
    """Compare a rollout's contexts with the prompts inference builds for the same conversation.

    TRL builds an episode by concatenation: the prompt's tokens, what the student sampled, the tool
    results' tokens (`_get_tool_suffix_ids`), the next sampled turn. distillery's inference encodes
    the whole rendered conversation before each turn (`chat_tokens.encode`). Both are compared on a
    two-turn episode with the trainer's own template and tools.

    Raises when the first turn's context differs, or when TRL replaced a template that is not
    prefix-preserving with its training template (inference never uses it): either would train the
    student on contexts it never sees. Returns a note (and warns) when only later turns differ:
    a tokenizer whose merges cross the assistant header's newline (the world tokenizer's) re-encodes
    the history differently from the tokens the student sampled; TRL trains on what was sampled.
    Returns None when every context matches.
    """
    if not trainer.tools:
        return None
    if trainer.chat_template is not None:
        raise ConfigError("the student's chat template is not prefix-preserving, so TRL would roll out with its own "
                          "training template, which inference never uses; fix the template (docs/training.md)")
    tokenizer = trainer._tokenizer
    schemas = [dict(tool) for tool in trainer.tools]
    name = trainer.tools[0].__name__
    call = {"type": "function", "function": {"name": name, "arguments": {"query": "SKU-1042 Berlin"}}}
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "How many units of SKU-1042 are in stock in Berlin?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "name": name, "content": '{"units": 12}'},
        {"role": "assistant", "content": "There are 12 units in stock."},
    ]
    prompt_ids = list(tokenizer.apply_chat_template(messages[:2], tools=schemas, add_generation_prompt=True, tokenize=True,
                                                    return_dict=True, **trainer.chat_template_kwargs)["input_ids"])
    if prompt_ids != encode(tokenizer, completion_text(tokenizer, messages, 2, schemas)[0]):
        raise ConfigError("the student's chat template: TRL's rollout prompt is not the prompt inference encodes, so "
                          "the student would be trained on contexts it never sees (docs/training.md)")
    sampled = encode(tokenizer, completion_text(tokenizer, messages, 2, schemas)[1])
    context = prompt_ids + sampled + list(trainer._get_tool_suffix_ids([messages[3]]))
    if context == encode(tokenizer, completion_text(tokenizer, messages, 4, schemas)[0]):
        return None
    note = ("after a tool result, inference re-encodes the conversation and this tokenizer merges differently across "
            "the assistant header's newline, so from the second turn on the student's context at inference is not "
            "the sampled tokens TRL trains on (docs/training.md, On-policy distillation)")
    logger.warning("rollout tokens: %s", note)
    return note


# -- trainers ---------------------------------------------------------------------------------


class _LedgerMixin:
    """Counts each generation batch into `self.ledger` (on every process; summed at the end)."""

    ledger: ComputeLedger

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            completion = output["completion_mask"]
            written = completion * output["tool_mask"] if "tool_mask" in output else completion
            prompt_tokens, completion_tokens, generated = (int(t.sum().item()) for t in (output["prompt_mask"], completion, written))
            self.ledger.add(
                episodes=completion.size(0),
                student_generated_tokens=generated,
                generation_context_tokens=prompt_tokens + completion_tokens - generated,
                teacher_scored_tokens=generated,
                teacher_forward_tokens=prompt_tokens + completion_tokens,
                training_tokens=prompt_tokens + completion_tokens,
            )
        return output


class OnPolicyTrainer(_LedgerMixin, TRLDistillationTrainer):
    """TRL's `DistillationTrainer` with a local teacher, plus the ledger and the rollout-token check."""

    def __init__(self, *args: Any, ledger: ComputeLedger, **kwargs: Any):
        self.ledger = ledger
        super().__init__(*args, **kwargs)
        self.rollout_note = check_rollout_tokens(self)


class TeacherServerClient(VLLMClient):
    """TRL's vLLM client for scoring only, without vLLM (or `requests`) in the training process.

    `VLLMClient.__init__` refuses to start unless vLLM is importable here (it also drives weight
    sync for a student served by vLLM), and its session is a `requests` one. Scoring with a teacher
    server is plain HTTP, so this constructor sets up an `httpx` client (the same `get`/`post`
    surface) and the model name, nothing else; `get_sequence_logprobs`, the request and the parsing
    of vLLM's `prompt_logprobs` are TRL's own.
    """

    def __init__(self, base_url: str, timeout_s: float = 300.0):
        import httpx

        self.session = httpx.Client(timeout=timeout_s)
        self.base_url = base_url
        try:
            self.model = self._get(f"{base_url}/v1/models")["data"][0]["id"]
        except Exception as exc:
            raise ConfigError(f"--teacher vllm:{base_url}: cannot list the server's models ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None


class ServerOnPolicyTrainer(_LedgerMixin, ServerDistillationTrainer):
    """TRL's `ServerDistillationTrainer`, with three changes it needs for agents and CPUs.

    - Its `__init__` takes no `tools`; this one passes them to `DistillationTrainer.__init__` (which
      it calls directly, then sets the four attributes `ServerDistillationTrainer.__init__` sets).
    - Its loss builds labels from `completion_mask` alone, so tool-result tokens would be trained
      on; `tool_mask` is applied to those labels before either of its two losses runs.
    - Its client requires vLLM in the training process; `TeacherServerClient` needs only HTTP.
    """

    def __init__(self, model, args: ServerDistillationConfig, *, ledger: ComputeLedger, teacher_client: VLLMClient,
                 tools=None, **kwargs: Any):
        self.ledger = ledger
        TRLDistillationTrainer.__init__(self, model=model, teacher_model=None, args=args, tools=tools, **kwargs)
        self.reverse_kl_top_1_mode = args.reverse_kl_top_1_mode
        self.loss_top_k = args.loss_top_k
        self.loss_add_tail = args.loss_add_tail
        self.teacher_client = teacher_client
        self._tool_mask = None
        self.rollout_note = check_rollout_tokens(self)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        tool_mask = inputs.get("tool_mask")
        if tool_mask is not None:
            # The server loss slices its labels from the shortest prompt's end (`_compute_prompt_length`:
            # the prompts are left-padded to one width), so lay the mask out the same way.
            prompt_mask = inputs["prompt_mask"]
            keep = torch.cat([torch.ones_like(prompt_mask), tool_mask.to(prompt_mask.dtype)], dim=1)
            self._tool_mask = keep[:, int(prompt_mask.sum(dim=1).min().item()):]
        try:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        finally:
            self._tool_mask = None

    def _without_tool_results(self, labels: torch.Tensor) -> torch.Tensor:
        if self._tool_mask is None:
            return labels
        mask = self._tool_mask[:, : labels.size(1)].to(labels.device)
        return labels.masked_fill(mask == 0, -100)

    def _compute_server_sparse_top_1_divergence_loss(self, teacher_result, student_log_probs, completion_tokens, labels):
        return super()._compute_server_sparse_top_1_divergence_loss(
            teacher_result, student_log_probs, completion_tokens, self._without_tool_results(labels))

    def _compute_server_forward_kl_loss(self, teacher_result, student_log_probs, labels):
        return super()._compute_server_forward_kl_loss(teacher_result, student_log_probs, self._without_tool_results(labels))


# -- the entry point --------------------------------------------------------------------------


def load_prompt_source(data: Any = None, from_store: str | Path | None = None) -> list[dict[str, Any]]:
    """Chat rows from exactly one of a data file/`Dataset`/records (`data`) and a store (`from_store`)."""
    from distillery.distill.trainer import load_training_data

    if (data is None) == (from_store is None):
        raise ConfigError("--signal on-policy takes its prompts from exactly one of --data and --from-store")
    if from_store is not None:
        return read_store_rows(from_store)
    dataset = load_training_data(data)
    return [{"messages": row["messages"], "tools": row.get("tools")} for row in dataset.to_list()]


def train_on_policy(
    student: Any,
    *,
    out: str | Path,
    teacher: Any,
    data: Any = None,
    from_store: str | Path | None = None,
    tools: Any = None,
    replay_tools: list[str] | tuple[str, ...] = (),
    config: OnPolicyConfig | None = None,
    callbacks: list | None = None,
    **overrides: Any,
) -> Path:
    """On-policy distillation; writes a Hugging Face model directory and `distillation.json` to `out`.

    student: the model to improve, normally an SFT checkpoint (`hf:runs/xs-sft`): rollouts from an
        untrained student are noise for the teacher to grade.
    teacher: a local model sharing the student's tokenizer (`world:teacher`, `hf:./dir`), or a vLLM
        server (`vllm:http://host:8000`); `anthropic:`/`openai:` teachers are refused (no logprobs
        for given tokens).
    data / from_store: where the prompts come from (the messages before each row's first assistant
        turn); recorded tool results in them feed `replay_tools`.
    tools: a `ToolBox`, or a `module:attr` import path (default: the offline world's tools).
    replay_tools: names of tools answered from recorded results instead of being run.
    config: the run's options, an `OnPolicyConfig`: `DistillationConfig`'s steps, learning rate,
        LoRA and so on, plus beta, temperature, max_completion_length, max_tool_turns and
        teacher_params. Keyword arguments named like its fields override it.
    callbacks: `transformers.TrainerCallback`s for the trainer.
    """
    from transformers.trainer_utils import get_last_checkpoint

    from distillery.distill.trainer import (load_model_and_tokenizer, load_student, lora_config, run_record,
                                            save_trained_student, training_settings)
    from distillery.tools import ToolBox, default_tools, load_tools

    if config is not None and not isinstance(config, OnPolicyConfig):
        raise TypeError("train_on_policy takes an OnPolicyConfig (DistillationConfig's options plus the on-policy ones)")
    config = replace(config or OnPolicyConfig(), **overrides)
    generation = student_generation_settings(config)
    resolved = resolve_teacher(teacher)
    rows = load_prompt_source(data, from_store)
    toolbox = tools if isinstance(tools, ToolBox) else load_tools(tools or default_tools(), option="--tools")
    if registry.is_untrained(student):
        logger.warning("on-policy from %s, an untrained student: its rollouts are noise for the teacher to grade; "
                       "warm-start from an SFT checkpoint (distillery train --signal sequence, then --student hf:<out>)",
                       student)

    out = Path(out)
    checkpoints = out / "checkpoints"
    model, tokenizer = load_student(student, config)
    saved_padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # TRL pads prompts on the left
    prepare_tool_parsing(tokenizer)

    teacher_model = client = None
    teacher_params = config.teacher_params
    if isinstance(resolved, ServerTeacher):
        client = TeacherServerClient(resolved.base_url)
        check_server_tokenizer(client, tokenizer, str(teacher))
    else:
        teacher_model, teacher_tokenizer = load_model_and_tokenizer(resolved, what="teacher")
        check_same_tokenizer(tokenizer, teacher_tokenizer, str(teacher))
        teacher_params = teacher_model.num_parameters()

    stats = ToolStats()
    bridged = bridge_tools(toolbox, replay=replay_tools, rows=rows, stats=stats)
    from datasets import Dataset

    dataset = Dataset.from_list(prompt_rows(rows))
    # TRL turns activation checkpointing on by default (a GPU default); a student here is small and
    # often trained on CPUs, as `distillery.distill.training_arguments` says for the other signals.
    settings = dict(beta=config.beta, temperature=config.temperature, max_completion_length=config.max_completion_length,
                    max_tool_calling_iterations=config.max_tool_turns, gradient_checkpointing=False, **generation)
    settings.update(training_settings(checkpoints, config, student, model))
    ledger = ComputeLedger(student_params=model.num_parameters(), teacher_params=teacher_params)
    peft_config = lora_config(config.lora_r, config.lora_alpha) if config.lora else None
    common = dict(train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config,
                  tools=bridged, ledger=ledger)
    if client is not None:
        arguments = ServerDistillationConfig(teacher_model_server_url=resolved.base_url, **settings)
        trainer = ServerOnPolicyTrainer(model, arguments, teacher_client=client, **common)
    else:
        arguments = TRLDistillationConfig(**settings)
        trainer = OnPolicyTrainer(model, teacher_model=teacher_model, args=arguments, **common)

    watch_ledger(callbacks, lambda: ledger.summed_over_processes(trainer.accelerator), trainer.accelerator)
    last = get_last_checkpoint(str(checkpoints)) if config.resume and checkpoints.is_dir() else None
    result = trainer.train(resume_from_checkpoint=last)

    totals = ledger.summed_over_processes(trainer.accelerator)
    tool_totals = stats.summed_over_processes(trainer.accelerator)
    tokenizer.padding_side = saved_padding_side  # the saved tokenizer is the one inference loads
    check = save_trained_student(trainer, out, tokenizer, lora=config.lora, rows=rows, self_check=config.self_check,
                                 seed=config.seed)
    if trainer.accelerator.is_main_process:
        summary = {
            "student": str(student) if isinstance(student, (str, Path)) else type(model).__name__,
            "teacher": str(teacher) if isinstance(teacher, (str, Path)) else "object",
            "signal": "on-policy",
            "teacher_kind": "server" if client is not None else "local",
            "student_generation": config.generate_with,
            "beta": config.beta,
            "temperature": config.temperature,
            # The names the other signals' summaries use, so tables can print every run alike.
            "alpha": 0.0,
            "divergence": _divergence_name(config.beta),
            "max_completion_length": config.max_completion_length,
            "max_tool_turns": config.max_tool_turns,
            "replayed_tools": sorted(replay_tools),
            "tools": tool_totals.to_dict(),
            "rollout_matches_inference": trainer.rollout_note is None,
            "rollout_note": trainer.rollout_note,
            "compute": totals.to_dict(),
            **run_record(trainer, result, config, examples=len(dataset), resumed_from=last, check=check),
        }
        (out / "distillation.json").write_text(json.dumps(summary, indent=2, default=str))
    trainer.accelerator.wait_for_everyone()
    return out


def student_generation_settings(config: OnPolicyConfig) -> dict[str, Any]:
    """TRL's settings for what samples the student's episodes, once vLLM is known to be able to run here.

    Checked before any model loads: vLLM imports only with a CUDA build, and TRL would otherwise
    fail deep inside the trainer's set-up.
    """
    if config.generate_with == "transformers":
        return {}
    flag = f"--generate-with {config.generate_with}"
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"{flag} needs vLLM in this environment (pip install vllm, on a CUDA machine); "
                          "--generate-with transformers runs anywhere")
    if not torch.cuda.is_available():
        raise ConfigError(f"{flag} needs a CUDA GPU and torch sees none; --generate-with transformers runs anywhere")
    settings: dict[str, Any] = {"use_vllm": True, "vllm_mode": config.generate_with.removeprefix("vllm-")}
    if config.vllm_server_url:
        settings["vllm_server_base_url"] = config.vllm_server_url
    return settings


def _divergence_name(beta: float) -> str:
    """What TRL's generalized JSD with `beta` is, in the names the other signals' summaries use."""
    return "reverse_kl" if beta == 1.0 else "forward_kl" if beta == 0.0 else f"jsd(beta={beta})"
