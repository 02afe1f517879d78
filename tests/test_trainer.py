"""DistillationTrainer on tiny models: masks, loss equivalences, alignment, resume, output directory."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from trl import SFTTrainer

from distillery.distill.config import DistillationConfig
from distillery.distill.losses import kd_loss
from distillery.distill.signals import (
    OnlineTeacherSignal,
    SequenceSignal,
    SparseTopKSignal,
    teacher_topk,
    write_teacher_topk,
)
from distillery.distill.trainer import DistillationTrainer, load_training_data, train_student
from distillery.distill.training_arguments import DistillationTrainingArguments
from distillery.errors import ConfigError
from tests.tiny_models import tiny_llama, tiny_tokenizer
from tests.trainer_helpers import chat_records, tiny_pair


def make_trainer(tmp_path, student, tokenizer, signal=None, **config):
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path / "ckpt"),
        per_device_train_batch_size=4,
        max_steps=1,
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        **config,
    )
    return DistillationTrainer(
        student, args=args, signal=signal, train_dataset=load_training_data(chat_records(8)), processing_class=tokenizer
    )


def first_batch(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    return batch


def test_batches_train_on_assistant_tokens_only(tmp_path):
    tokenizer = tiny_tokenizer()
    trainer = make_trainer(tmp_path, tiny_llama(tokenizer), tokenizer)
    batch = first_batch(trainer)
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        kept = tokenizer.decode(ids[labels != -100])
        full = tokenizer.decode(ids)
        # Everything the assistant wrote is trained on ...
        assert "<tool_call>" in kept and "</tool_call>" in kept and kept.count("<|im_end|>") == 2
        assert "The answer is" in kept or "degrees in" in kept
        # ... and nothing else: not the system prompt, the tool list, the user turn or the tool result.
        for outside in ("You are a helpful assistant", "<tools>", "What is", "<tool_response>", "<|im_start|>"):
            assert outside in full and outside not in kept
        # Arrow did not pad the arguments with the other tool's keys.
        assert "null" not in full


def batch_copy(batch):
    return {k: v.clone() for k, v in batch.items()}


def test_alpha_one_equals_plain_sft_loss(tmp_path):
    tokenizer, teacher, student = tiny_pair()
    signal = OnlineTeacherSignal(teacher, teacher_tokenizer=tokenizer, student_tokenizer=tokenizer)
    trainer = make_trainer(tmp_path, student, tokenizer, signal=signal, alpha=1.0, temperature=2.0)
    batch = first_batch(trainer)
    kd = trainer.compute_loss(trainer.model, batch_copy(batch))
    sft = SFTTrainer.compute_loss(trainer, trainer.model, batch_copy(batch))
    assert torch.allclose(kd, sft, rtol=1e-5, atol=1e-6)
    # Gradient accumulation normalisation agrees too (Trainer passes the token count).
    items = (batch["labels"][:, 1:] != -100).sum() * 3
    kd = trainer.compute_loss(trainer.model, batch_copy(batch), num_items_in_batch=items)
    sft = SFTTrainer.compute_loss(trainer, trainer.model, batch_copy(batch), num_items_in_batch=items)
    assert torch.allclose(kd, sft, rtol=1e-5, atol=1e-6)
    # With a teacher term the loss is no longer plain SFT.
    trainer.args.alpha = 0.5
    assert not torch.allclose(trainer.compute_loss(trainer.model, batch_copy(batch)), sft * 3, rtol=1e-3)


def test_online_signal_logits_match_a_direct_forward(tmp_path):
    tokenizer, teacher, student = tiny_pair()
    signal = OnlineTeacherSignal(teacher, teacher_tokenizer=tokenizer, student_tokenizer=tokenizer)
    trainer = make_trainer(tmp_path, student, tokenizer, signal=signal, alpha=0.0, temperature=1.5)
    batch = first_batch(trainer)
    with torch.no_grad():
        direct = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(signal.logits(batch["input_ids"], batch["attention_mask"]), direct)
    assert not any(p.requires_grad for p in teacher.parameters())
    # The trainer's loss is the KD loss against exactly those logits, shifted by one token.
    loss = trainer.compute_loss(trainer.model, batch_copy(batch))
    student_logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted = F.pad(batch["labels"][:, 1:], (0, 1), value=-100)
    expected = kd_loss(student_logits, direct, shifted, alpha=0.0, temperature=1.5)
    assert torch.allclose(loss, expected, rtol=1e-5)
    loss.backward()
    assert trainer.model.model.embed_tokens.weight.grad is not None


def test_online_signal_rejects_a_different_tokenizer():
    tokenizer = tiny_tokenizer()
    other = tiny_tokenizer(["completely different corpus of words"], vocab_size=300)
    with pytest.raises(ConfigError, match="share a tokenizer"):
        OnlineTeacherSignal(tiny_llama(other), teacher_tokenizer=other, student_tokenizer=tokenizer)


def test_sparse_sidecar_lines_up_with_label_positions(tmp_path):
    tokenizer, teacher, student = tiny_pair()
    trainer = make_trainer(tmp_path, student, tokenizer, signal=SequenceSignal(), alpha=0.0, temperature=2.0)
    # A sidecar that keeps the teacher's whole vocabulary: sparse KD must then equal dense KD.
    vocab = len(tokenizer)
    sparse = SparseTopKSignal(teacher_topk(teacher, trainer.train_dataset, k=vocab))
    trainer.set_signal(sparse)
    trainer.args.signal = "sparse"
    batch = first_batch(trainer)
    shifted = F.pad(batch["labels"][:, 1:], (0, 1), value=-100)
    # Every trained token has a teacher entry, and nothing else does.
    assert torch.equal(batch["kd_mask"], shifted != -100)
    # Each entry's top-1 is the teacher's argmax at that position.
    with torch.no_grad():
        dense = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    kept = batch["kd_mask"]
    assert torch.equal(batch["kd_topk_ids"][kept][:, 0], dense.argmax(-1)[kept])
    sparse_loss = trainer.compute_loss(trainer.model, batch_copy(batch))
    student_logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    dense_loss = kd_loss(student_logits, dense, shifted, alpha=0.0, temperature=2.0)
    assert torch.allclose(sparse_loss, dense_loss, rtol=1e-3)


def test_sparse_sidecar_from_another_tokenization_is_refused(tmp_path):
    tokenizer, teacher, student = tiny_pair()
    trainer = make_trainer(tmp_path, student, tokenizer, alpha=0.5)
    targets = teacher_topk(teacher, trainer.train_dataset, k=4)
    # A sidecar whose rows are shorter than the dataset's: built from other text or another tokenizer.
    shortened = {row: tuple(t[:20] for t in target) for row, target in targets.items()}
    trainer.set_signal(SparseTopKSignal(shortened))
    with pytest.raises(ConfigError, match="another tokenizer, chat template or data file"):
        first_batch(trainer)


def test_sparse_sidecar_round_trips_through_the_builder_format(tmp_path):
    from distillery.dataset.sidecar import TopKSidecar

    tokenizer, teacher, student = tiny_pair()
    trainer = make_trainer(tmp_path, student, tokenizer)
    targets = teacher_topk(teacher, trainer.train_dataset, k=5)
    path = write_teacher_topk(tmp_path / "train.topk.parquet", targets, tokenizer=tokenizer, k=5)
    reader = TopKSidecar(path)
    for row, (ids, values, has_target) in targets.items():
        read_ids, read_values, read_has = reader[row]
        assert torch.equal(read_has, has_target) and torch.equal(read_ids[has_target], ids[has_target])
        assert torch.equal(read_values[has_target], values[has_target])
    other = tiny_tokenizer(["a different corpus"], vocab_size=300)
    with pytest.raises(ConfigError, match="another tokenizer"):
        SparseTopKSignal(path, student_tokenizer=other)


def test_train_student_writes_a_model_hf_can_load(tmp_path):
    tokenizer, teacher, student = tiny_pair()
    config = DistillationConfig(signal="sparse", topk=8, max_steps=2, batch_size=4, learning_rate=1e-3, progress=False)
    out = train_student((student, tokenizer), chat_records(8), out=tmp_path / "student", teacher=(teacher, tokenizer),
                        config=config)
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    assert (out / "teacher.topk.parquet").exists()
    summary = json.loads((out / "distillation.json").read_text())
    assert summary["signal"] == "sparse" and summary["k"] == 8 and summary["global_step"] == 2
    assert any("loss_soft" in entry for entry in summary["log_history"])

    from distillery.models import load_model

    loaded = load_model(f"hf:{out}")
    assert loaded.tokenizer.chat_template == tokenizer.chat_template
    trained = {k: v for k, v in loaded.model.state_dict().items()}
    assert not torch.equal(trained["model.embed_tokens.weight"], tiny_llama(tokenizer).model.embed_tokens.weight)
    turns = loaded.generate(_user("What is 2+3?"), max_tokens=4)
    assert len(turns) == 1


def _user(text):
    from distillery.trajectory import Message

    return [Message(role="user", content=text)]


def test_resume_continues_the_step_count(tmp_path):
    from transformers import TrainerCallback

    class StepsTaken(TrainerCallback):
        def __init__(self):
            self.steps = []

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(state.global_step)

    tokenizer = tiny_tokenizer()
    common = dict(out=tmp_path / "run", batch_size=2, learning_rate=1e-3, save_steps=2, progress=False, seed=3)
    train_student((tiny_llama(tokenizer), tokenizer), chat_records(4), max_steps=2, **common)
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()
    taken = StepsTaken()
    train_student((tiny_llama(tokenizer), tokenizer), chat_records(4), max_steps=4, resume=True,
                  callbacks=[taken], **common)
    summary = json.loads((tmp_path / "run" / "distillation.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2")
    assert summary["global_step"] == 4
    assert taken.steps == [3, 4]  # the resumed run did only the remaining steps


def test_training_is_seeded(tmp_path):
    tokenizer = tiny_tokenizer()
    weights = []
    for name in ("a", "b"):
        out = train_student((tiny_llama(tokenizer), tokenizer), chat_records(2), out=tmp_path / name, max_steps=1,
                            batch_size=2, learning_rate=1e-3, progress=False, seed=7)
        from safetensors.torch import load_file

        weights.append(load_file(out / "model.safetensors"))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_lora_output_is_merged_into_a_plain_model(tmp_path):
    tokenizer, teacher, student = tiny_pair()
    out = train_student((student, tokenizer), chat_records(2), out=tmp_path / "lora", teacher=(teacher, tokenizer),
                        signal="online", lora=True, lora_r=4, max_steps=1, batch_size=2, progress=False)
    from safetensors.torch import load_file

    keys = load_file(out / "model.safetensors").keys()
    assert not any("lora" in k for k in keys)
    assert (out / "adapter" / "adapter_config.json").exists()


def test_missing_teacher_is_a_one_line_error(tmp_path):
    tokenizer = tiny_tokenizer()
    with pytest.raises(ConfigError, match="--signal online needs --teacher"):
        train_student((tiny_llama(tokenizer), tokenizer), chat_records(2), out=tmp_path / "x", signal="online")


def test_action_signal_loss_is_teacher_weighted_nll_of_actions(tmp_path):
    from datasets import Dataset

    from distillery.distill.losses import action_distribution_loss, sequence_logprob
    from distillery.distill.signals import ActionSignal
    from distillery.distill.trainer import chat_rows
    from distillery.trajectory import ToolCall

    tokenizer = tiny_tokenizer()
    rows = chat_rows(chat_records(4))
    paris = ToolCall(name="get_weather", arguments={"city": "Paris"}).canonical()
    rome = ToolCall(name="get_weather", arguments={"city": "Rome"}).canonical()
    for row in rows:
        row["action_distributions"] = json.dumps([{paris: 0.75, rome: 0.25}, None])
    dataset = Dataset.from_list(rows)
    args = DistillationTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1,
                                         use_cpu=True, save_strategy="no", disable_tqdm=True, alpha=0.0)
    trainer = DistillationTrainer(tiny_llama(tokenizer), args=args, signal=ActionSignal(dataset, tokenizer),
                                  train_dataset=dataset, processing_class=tokenizer)
    batch = first_batch(trainer)
    assert batch["action_state"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    loss = trainer.compute_loss(trainer.model, {k: v.clone() for k, v in batch.items()})
    logits = trainer.model(input_ids=batch["action_input_ids"], attention_mask=batch["action_attention_mask"]).logits
    scores = sequence_logprob(logits, F.pad(batch["action_labels"][:, 1:], (0, 1), value=-100)).view(4, 2)
    expected = action_distribution_loss(scores, batch["action_prob"].view(4, 2))
    assert torch.allclose(loss, expected, rtol=1e-5)
    loss.backward()  # the action term trains the student
    assert trainer.model.model.embed_tokens.weight.grad.abs().sum() > 0


def test_seed_initialises_an_untrained_world_student():
    from distillery.distill.trainer import load_model_and_tokenizer

    first, _ = load_model_and_tokenizer("world:student-xs", seed=1)
    again, _ = load_model_and_tokenizer("world:student-xs", seed=1)
    other, _ = load_model_and_tokenizer("world:student-xs", seed=2)
    weight = "model.embed_tokens.weight"
    assert torch.equal(first.state_dict()[weight], again.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])
