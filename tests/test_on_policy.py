"""On-policy distillation on TRL's DistillationTrainer: tools, masks, the loss, teachers, the ledger.

Rollouts use the world models (the world teacher as the student, because it already calls tools;
the untrained world student as the teacher, so the divergence is not zero), on CPU.
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import DistillationConfig as TRLDistillationConfig
from trl.chat_template_utils import (is_chat_template_prefix_preserving, parse_response, qwen2_5_chat_template,
                                     supports_tool_calling)
from trl.trainer.distillation_trainer import _chunked_divergence_loss

from distillery.formats.hermes import parse_tool_calls
from distillery.distill.ledger import ComputeLedger
from distillery.distill.on_policy import OnPolicyTrainer, prepare_tool_parsing, train_on_policy
from distillery.distill.on_policy_data import (
    ServerTeacher,
    ToolStats,
    bridge_tools,
    check_same_tokenizer,
    prompt_rows,
    resolve_teacher,
)
from distillery.distill.trainer import chat_rows, set_training_threads
from distillery.errors import ConfigError
from distillery.models import load_model
from distillery.tools import Tool, ToolBox, tool
from distillery.world.expert import solve
from distillery.world.tasks import generate_tasks
from distillery.world.tools import TOOLS as WORLD_TOOLS
from tests.tiny_models import tiny_llama, tiny_tokenizer


@pytest.fixture(scope="module")
def world_rows():
    return chat_rows([solve(task) for task in generate_tasks("train", 8, seed=3)])


def _stock_queries(rows):
    """Rows whose expert solution calls get_stock: the world teacher calls it on these prompts."""
    return [r for r in rows if any(c["function"]["name"] == "get_stock" for m in r["messages"] for c in (m.get("tool_calls") or []))]


# -- the loss -----------------------------------------------------------------------------------


def test_reverse_kl_step_matches_hand_computed_case():
    # V = 3, identity LM heads, so the hidden states are the logits.
    # student p = [1/4, 1/2, 1/4], teacher q = [1/2, 1/4, 1/4]
    # KL(p || q) = 1/4 ln(1/2) + 1/2 ln 2 + 0 = ln2 / 4
    # d KL / d z_i = p_i (ln p_i - ln q_i - KL) = [-5 ln2/16, 3 ln2/8, -ln2/16]
    student = torch.tensor([[[0.0, math.log(2), 0.0]]], requires_grad=True)
    teacher = torch.tensor([[[math.log(2), 0.0, 0.0]]])
    eye = torch.eye(3)
    loss, _, valid = _chunked_divergence_loss(student, teacher, eye, eye, torch.ones(1, 1), beta=1.0)
    ln2 = math.log(2)
    assert loss.item() == pytest.approx(ln2 / 4, abs=1e-6)
    assert int(valid) == 1
    loss.backward()
    expected_grad = torch.tensor([-5 * ln2 / 16, 3 * ln2 / 8, -ln2 / 16])
    assert torch.allclose(student.grad[0, 0], expected_grad, atol=1e-6)
    # One SGD step (lr 1) moves the student toward the teacher: the divergence falls.
    with torch.no_grad():
        stepped = student - student.grad
    after, _, _ = _chunked_divergence_loss(stepped, teacher, eye, eye, torch.ones(1, 1), beta=1.0)
    assert after.item() < loss.item()


# -- rollouts: real tools, masked results --------------------------------------------------------


def _recording_get_stock(calls):
    real = next(t for t in WORLD_TOOLS if t.name == "get_stock")

    def get_stock(sku: str, city: str) -> dict:
        calls.append((sku, city))
        return real.fn(sku=sku, city=city)

    return Tool(get_stock, real.spec)


def test_rollouts_run_real_tools_and_tool_results_carry_no_loss(world_rows):
    calls: list[tuple[str, str]] = []
    toolbox = ToolBox([_recording_get_stock(calls) if t.name == "get_stock" else t for t in WORLD_TOOLS])
    student, teacher = load_model("world:teacher"), load_model("world:student-xs", seed=0)
    set_training_threads(student.model, 0)  # one thread for a small model, as every training run does
    tokenizer = student.tokenizer
    tokenizer.padding_side = "left"
    prepare_tool_parsing(tokenizer)
    stats = ToolStats()
    rows = _stock_queries(world_rows)[:2]
    assert rows, "the seeded tasks include stock questions"
    config = TRLDistillationConfig(output_dir="unused", per_device_train_batch_size=len(rows), max_steps=1,
                                   max_completion_length=96, max_tool_calling_iterations=2, bf16=False, use_cpu=True,
                                   gradient_checkpointing=False, report_to="none", save_strategy="no")
    torch.manual_seed(0)
    trainer = OnPolicyTrainer(student.model, teacher_model=teacher.model, args=config,
                              train_dataset=Dataset.from_list(prompt_rows(rows)), processing_class=tokenizer,
                              tools=bridge_tools(toolbox, stats=stats), ledger=ComputeLedger(student_params=1))
    trainer.model.train()
    batch = trainer._generate_and_score_completions([{"prompt": r["prompt"]} for r in prompt_rows(rows)])

    assert calls, "the rollouts called the real get_stock"
    assert stats.calls_by_tool.get("get_stock", 0) == len(calls)
    tool_mask, completion_mask = batch["tool_mask"], batch["completion_mask"]
    masked = [tokenizer.decode(ids[(m == 0) & (c == 1)]) for ids, m, c in
              zip(batch["completion_ids"], tool_mask, completion_mask)]
    assert any("<tool_response>" in text and '"units"' in text for text in masked)
    written = [tokenizer.decode(ids[(m == 1) & (c == 1)]) for ids, m, c in
               zip(batch["completion_ids"], tool_mask, completion_mask)]
    assert not any("<tool_response>" in text for text in written)

    # The trainer's loss is the mean reverse KL over the tokens the student wrote, and only those.
    loss = trainer.compute_loss(trainer.model, batch)
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], completion_mask], dim=1)
    width = batch["prompt_ids"].size(1)
    with torch.no_grad():
        s = F.log_softmax(student.model(input_ids=input_ids, attention_mask=attention).logits, -1)[:, width - 1:-1]
        t = F.log_softmax(teacher.model(input_ids=input_ids, attention_mask=attention).logits, -1)[:, width - 1:-1]
    per_token = (s.exp() * (s - t)).sum(-1)
    written_mask = (completion_mask * tool_mask).bool()
    expected = per_token[written_mask].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-3)
    with_results = per_token[completion_mask.bool()].mean()
    assert abs(with_results.item() - expected.item()) > 1e-3  # the mask changes the loss: tool tokens are excluded


# -- tools --------------------------------------------------------------------------------------


def test_replayed_tools_answer_from_recorded_results_and_are_not_run(world_rows, caplog):
    ran: list[str] = []
    real = next(t for t in WORLD_TOOLS if t.name == "get_order")
    spy = Tool(lambda order_id: ran.append(order_id) or {"status": "live"}, real.spec)
    recorded = [(json.loads(c["function"]["arguments"]), m) for r in world_rows for m in r["messages"]
                for c in (m.get("tool_calls") or []) if c["function"]["name"] == "get_order"]
    assert recorded, "the seeded tasks include order lookups"
    stats = ToolStats()
    with caplog.at_level("WARNING"):
        bridged = {t.__name__: t for t in bridge_tools(ToolBox([spy]), replay=["get_order"], rows=world_rows, stats=stats)}
    assert "get_order is NOT run" in caplog.text
    arguments = recorded[0][0]
    answer = bridged["get_order"](**arguments)
    assert answer != json.dumps({"status": "live"}) and "Error" not in answer
    missing = bridged["get_order"](order_id="ORD-0000000")
    assert missing.startswith("Error: get_order is replayed")
    assert ran == [] and stats.replayed == 1 and stats.replay_misses == 1
    with pytest.raises(ConfigError, match="no such tool"):
        bridge_tools(ToolBox([spy]), replay=["place_order"], rows=world_rows)


def test_async_tool_runs_through_a_sync_wrapper():
    @tool
    async def double(x: int) -> int:
        """Double a number.

        Args:
            x: The number.
        """
        await asyncio.sleep(0)
        return 2 * x

    (bridged,) = bridge_tools(ToolBox([double]))
    assert bridged(x=21) == "42"
    assert bridged["function"]["name"] == "double" and bridged.__name__ == "double"
    assert "Error" in bridged(x="not a number")  # validated as at inference


# -- chat format --------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["world", "hermes", "qwen2.5"])
def test_chat_templates_pass_trl_checks_and_parse_like_distillery(which):
    if which == "world":
        tokenizer = load_model("world:student-xs").tokenizer
    else:
        tokenizer = tiny_tokenizer()
        if which == "qwen2.5":
            tokenizer.chat_template = qwen2_5_chat_template
    assert supports_tool_calling(tokenizer)
    assert is_chat_template_prefix_preserving(tokenizer)
    prepare_tool_parsing(tokenizer)
    text = '<tool_call>\n{"name": "get_stock", "arguments": {"sku": "SKU-1042", "city": "Berlin"}}\n</tool_call><|im_end|>'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix = tokenizer("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    parsed = parse_response(tokenizer, ids, prefix=prefix)  # what TRL's tool loop calls
    _, ours = parse_tool_calls(text.removesuffix("<|im_end|>"))
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in parsed["tool_calls"]] == \
        [(c.name, c.arguments) for c in ours]


# -- teachers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["anthropic:claude-opus-4-6", "openai:gpt-4o"])
def test_teachers_without_logprobs_are_refused_in_one_line(spec):
    with pytest.raises(ConfigError) as caught:
        resolve_teacher(spec)
    message = str(caught.value)
    assert "\n" not in message and "logprobs" in message and spec in message


def test_vllm_teacher_urls_resolve_to_a_server():
    assert resolve_teacher("vllm:http://127.0.0.1:8000/v1/") == ServerTeacher("http://127.0.0.1:8000")
    assert resolve_teacher("http://h:1") == ServerTeacher("http://h:1")
    assert resolve_teacher("world:teacher") == "world:teacher"


def test_a_teacher_with_another_tokenizer_is_refused(world_rows, tmp_path):
    student = load_model("world:student-xs").tokenizer
    other = tiny_tokenizer()
    with pytest.raises(ConfigError, match="GOLD"):
        check_same_tokenizer(student, other, "hf:other")
    with pytest.raises(ConfigError, match="tokenizer differs"):
        train_on_policy("world:student-xs", out=tmp_path / "out", teacher=(tiny_llama(other), other), data=world_rows[:2],
                        max_steps=1, progress=False)


# -- the run and its ledger ---------------------------------------------------------------------


def _run(out, teacher, rows, **options):
    train_on_policy("world:teacher", out=out, teacher=teacher, data=rows, max_steps=1, batch_size=2,
                    max_completion_length=64, max_tool_turns=2, self_check=0, progress=False, **options)
    return json.loads((out / "distillation.json").read_text())


def test_run_writes_the_compute_ledger(world_rows, tmp_path):
    summary = _run(tmp_path / "out", "world:student-xs", _stock_queries(world_rows)[:2])
    ledger = summary["compute"]
    assert summary["signal"] == "on-policy" and summary["global_step"] == 1
    assert ledger["episodes"] == 2
    assert 0 < ledger["student_generated_tokens"] == ledger["teacher_scored_tokens"] <= 2 * 64
    assert ledger["training_tokens"] == ledger["teacher_forward_tokens"] > ledger["student_generated_tokens"]
    assert ledger["training_flops"] == 6 * ledger["student_params"] * ledger["training_tokens"]
    assert ledger["teacher_flops"] == 2 * ledger["teacher_params"] * ledger["teacher_forward_tokens"]
    generation = ledger["student_generated_tokens"] + ledger["generation_context_tokens"]
    assert ledger["student_generation_flops"] == 2 * ledger["student_params"] * generation
    assert summary["tools"]["calls"] > 0
    assert math.isfinite(summary["train_loss"]) and summary["train_loss"] > 0
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_vllm_served_teacher(world_rows, tmp_path, monkeypatch):
    from trl.experimental.server_distillation import ServerDistillationTrainer

    from tests.wire.vllm_teacher_server import VLLMTeacherServer

    # Spy on the labels TRL's server loss receives: tool results must not be among them.
    seen = []
    original = ServerDistillationTrainer._compute_server_sparse_top_1_divergence_loss

    def spy(self, teacher_result, student_log_probs, completion_tokens, labels):
        seen.append((completion_tokens.clone(), labels.clone()))
        return original(self, teacher_result, student_log_probs, completion_tokens, labels)

    monkeypatch.setattr(ServerDistillationTrainer, "_compute_server_sparse_top_1_divergence_loss", spy)
    teacher = load_model("world:student-xs", seed=0)
    with VLLMTeacherServer(teacher.model, teacher.tokenizer) as server:
        summary = _run(tmp_path / "out", f"vllm:{server.base_url}/v1", _stock_queries(world_rows)[:2], teacher_params=123)
        scored = [r.json for r in server.requests if r.path == "/v1/completions"]
    assert scored and scored[0]["prompt_logprobs"] == 1 and scored[0]["max_tokens"] == 1
    assert all(isinstance(ids, list) and all(isinstance(i, int) for i in ids) for ids in scored[0]["prompt"])
    assert summary["teacher_kind"] == "server" and summary["compute"]["teacher_params"] == 123
    assert math.isfinite(summary["train_loss"]) and summary["train_loss"] > 0
    tokenizer = teacher.tokenizer
    (tokens, labels), = seen
    everything = [tokenizer.decode(row) for row in tokens]
    trained = [tokenizer.decode(row[row != -100]) for row in labels]
    assert any("<tool_response>" in text for text in everything)  # the episodes called tools
    assert not any("<tool_response>" in text for text in trained)
    assert all(text.strip() for text in trained)


# -- the command line ---------------------------------------------------------------------------


def test_cli_needs_exactly_one_prompt_source_and_refuses_claude(world_rows, tmp_path):
    from tests.test_cli_usage_errors import assert_failed_run, assert_usage_error, invoke

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in world_rows[:2]))
    base = ("train", "--signal", "on-policy", "--student", "world:student-xs", "--out", tmp_path / "out")
    assert_usage_error(invoke(*base, "--teacher", "world:teacher"), "--data", "--from-store")
    assert_usage_error(invoke("train", "--student", "world:student-xs", "--out", tmp_path / "o2"), "--data")
    line = assert_failed_run(invoke(*base, "--data", data, "--teacher", "anthropic:claude-opus-4-6"), "logprobs")
    assert "anthropic:claude-opus-4-6" in line
    assert not (tmp_path / "out").exists()
