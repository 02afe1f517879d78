"""Training world models: the copy-weighted loss, its token mask, the data builder and a tiny run."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from distillery.errors import ConfigError
from distillery.world.expert import solve
from distillery.world.models import load_world_tokenizer
from distillery.world.tasks import generate_tasks
from distillery.world.train import (
    IGNORE_INDEX,
    _PackCollator,
    _PadCollator,
    TrainSettings,
    build_training_data,
    copy_mask,
    encode_trajectory,
    resolve_device,
    training_tasks,
    train_world_model,
    weighted_lm_loss,
)

END, SPECIAL = 99, {99}


def test_copy_mask_marks_tokens_found_by_content_not_continuations():
    # system [5 6 END] | user [7 8 9 END] | assistant [1 8 9 3 END]
    ids = [5, 6, END, 7, 8, 9, END, 1, 8, 9, 3, 5, END]
    assistant = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    mask = copy_mask(ids, assistant, END, SPECIAL)
    # 8 follows 1 here but 7 in the user turn: found by content. 9 follows 8 in both: a continuation.
    # 3 occurs nowhere else, 5 only in the system message, END is special.
    assert mask == [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]


def test_copy_mask_on_a_stock_task_picks_the_city_in_the_call():
    tokenizer = load_world_tokenizer()
    task = generate_tasks("train", 1, seed=4, families=["stock"])[0]
    [row] = encode_trajectory(tokenizer, solve(task), 512)
    city = task.metadata["entities"]["city"]
    marked = [tokenizer.decode(row["input_ids"][i - 1 : i + 1]) for i, m in enumerate(row["copy_mask"]) if m]
    assert any(text.endswith(f'"city": "{city}') for text in marked), marked
    assert all(label != IGNORE_INDEX for label, m in zip(row["labels"], row["copy_mask"]) if m)  # assistant tokens only
    assert 0 < sum(row["copy_mask"]) < sum(label != IGNORE_INDEX for label in row["labels"]) / 2


def test_weighted_loss_is_the_mean_token_loss_at_weight_one_and_reweights_copies():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.tensor([[IGNORE_INDEX, 3, 4, 5, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, 1, 2, 7, 8]])
    copies = torch.tensor([[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0]])
    plain = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    assert torch.allclose(weighted_lm_loss(logits, labels, copies, 1.0), plain)
    token = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX, reduction="none")
    kept = labels[:, 1:] != IGNORE_INDEX
    weights = kept.float() * (1 + 4 * copies[:, 1:].float())
    assert torch.allclose(weighted_lm_loss(logits, labels, copies, 5.0), (token * weights).sum() / weights.sum())
    assert weights.sum() == kept.sum() + 4 * 2  # two copy tokens, each weighing 5


def test_training_data_is_the_same_for_any_worker_count():
    tokenizer = load_world_tokenizer()
    serial = build_training_data(tokenizer, 2000, seed=3, max_length=512, workers=1)
    parallel = build_training_data(tokenizer, 2000, seed=3, max_length=512, workers=2)
    # At least one sequence per trajectory; more where a turn with no text before its calls makes the
    # history re-tokenize differently (chat_tokens splits the conversation there).
    assert len(serial) >= 2000 and serial == parallel


def test_focus_tasks_add_new_tasks_from_the_named_families_only():
    base = training_tasks(50, seed=4)
    tasks = training_tasks(50, seed=4, focus_families=("convert", "stock_value"), focus_tasks=30)
    assert tasks[:50] == base and len(tasks) == 80
    assert {t.metadata["family"] for t in tasks[50:]} == {"convert", "stock_value"}
    assert not {t.id for t in tasks[50:]} & {t.id for t in base}
    with pytest.raises(ConfigError, match="--focus-tasks needs --focus"):
        training_tasks(10, seed=0, focus_tasks=5)
    with pytest.raises(ConfigError, match="unknown task family 'nope'"):
        training_tasks(10, seed=0, focus_families=("nope",), focus_tasks=5)


def test_a_packed_batch_has_the_loss_and_gradients_of_the_padded_batch():
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_world_tokenizer()
    features = build_training_data(tokenizer, 12, seed=4, max_length=512)[:10]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, use_cache=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    padded = _PadCollator(tokenizer.pad_token_id, with_copy_mask=True)(features)
    packed = _PackCollator(tokenizer.pad_token_id, with_copy_mask=True)(features)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]  # fewer rows...
    assert packed["input_ids"].shape[1] == padded["input_ids"].shape[1]  # ...none longer than the longest sequence
    assert (packed["labels"] != IGNORE_INDEX).sum() == (padded["labels"][:, 1:] != IGNORE_INDEX).sum()

    def loss_and_grads(batch):
        model.zero_grad()
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "copy_mask")}
        loss = weighted_lm_loss(model(**inputs).logits, batch["labels"], batch["copy_mask"], 5.0)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    pad_loss, pad_grads = loss_and_grads(padded)
    pack_loss, pack_grads = loss_and_grads(packed)
    assert pack_loss == pytest.approx(pad_loss, rel=1e-5)
    for a, b in zip(pad_grads, pack_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # Without the restarting position ids, the sequences in a row would attend to each other.
    crossed = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).expand_as(packed["input_ids"]))
    crossed_grads = loss_and_grads(crossed)[1]
    assert any(not torch.allclose(a, b, rtol=1e-2, atol=1e-5) for a, b in zip(pad_grads, crossed_grads))


def test_device_choice_is_checked():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="auto, cpu or cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_a_tiny_copy_weighted_run_saves_a_loadable_model_and_reports_itself(tmp_path):
    from distillery.models import load_model

    settings = TrainSettings(config="student-xs", out=str(tmp_path / "xs"), n_tasks=48, max_steps=4, batch_size=4,
                             copy_weight=5.0, log_every=2, threads=1, bf16=False, device="cpu", workers=1)
    report = train_world_model(settings)
    assert report["steps"] == 4 and report["device"] == "cpu" and report["stopped_by_deadline_at_step"] is None
    assert all(loss > 0 for _, loss in report["loss_log"])
    assert json.loads((tmp_path / "xs" / "training.json").read_text())["settings"]["copy_weight"] == 5.0
    model = load_model(f"hf:{tmp_path / 'xs'}")
    assert model.model.num_parameters() == report["parameters"] == 129_264


def test_max_minutes_stops_training_and_says_so(tmp_path):
    settings = TrainSettings(config="student-xs", out=str(tmp_path / "xs"), n_tasks=48, max_steps=50, batch_size=4,
                             threads=1, bf16=False, device="cpu", workers=1, max_minutes=1e-6)
    report = train_world_model(settings)
    assert report["stopped_by_deadline_at_step"] == 1 and report["steps"] == 1


def test_a_run_stopped_by_the_deadline_resumes_from_its_checkpoint(tmp_path):
    common = dict(config="student-xs", out=str(tmp_path / "xs"), n_tasks=48, max_steps=4, batch_size=4, threads=1,
                  bf16=False, device="cpu", workers=1, save_steps=100)
    first = train_world_model(TrainSettings(**common, max_minutes=1e-6))
    assert first["steps"] == 1 and (tmp_path / "xs" / "_trainer" / "checkpoint-1").is_dir()  # kept for --resume
    resumed = train_world_model(TrainSettings(**common, resume=True))
    assert resumed["resumed_from_step"] == 1 and resumed["steps"] == 4
    assert not (tmp_path / "xs" / "_trainer").exists()  # a finished run cleans up its checkpoints
    with pytest.raises(ConfigError, match="no checkpoint"):
        train_world_model(TrainSettings(**common, resume=True))
