"""`distillery student init`: students pruned from the teacher (distill/init.py, commands/student.py).

Tiny Llama-family models built from configs (tests/tiny_models.py) and the bundled world teacher;
nothing is downloaded. The constructed models have parts that do nothing (an identity layer, heads
and neurons whose output is zero, residual channels that stay zero): importance must remove
exactly those, and removing them must leave the logits unchanged.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

from distillery.errors import ConfigError
from distillery.models import load_model
from distillery.trajectory import Message
from tests.tiny_models import save_tiny_model, tiny_tokenizer
from tests.trainer_helpers import chat_records

init = pytest.importorskip("distillery.distill.init")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def rows():
    return chat_records(8)


def _config(tokenizer, *, kind="llama", hidden=32, layers=4, heads=4, kv_heads=None, intermediate=64, tied=True):
    options = dict(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads or heads, max_position_embeddings=1024,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tied,
    )
    return {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}[kind](**options)


def _model(config, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    return model.eval()


def _ids(tokenizer, rows, n=3):
    calibration = init.calibration_sequences(tokenizer, rows, n=n)
    width = min(len(ids) for ids in calibration.input_ids)
    return torch.tensor([ids[:width] for ids in calibration.input_ids])


@torch.no_grad()
def _logits(model, ids):
    return model(input_ids=ids, use_cache=False).logits


def _kill_head(layer, head, head_dim):
    """A head whose contribution to the residual stream is zero (its slice of o_proj)."""
    layer.self_attn.o_proj.weight[:, head * head_dim:(head + 1) * head_dim] = 0


def _make_identity(layer):
    layer.self_attn.o_proj.weight.zero_()
    layer.mlp.down_proj.weight.zero_()


# ---------------------------------------------------------------------------------------------
# Shapes and the config


def test_resolve_shape_defaults_and_checks():
    source = init.StudentShape(layers=4, hidden=192, intermediate=512, heads=4, kv_heads=4, head_dim=48)
    shape = init.resolve_shape(source, layers=2, hidden=96)
    assert shape == init.StudentShape(2, 96, 256, 2, 2, 48)  # intermediate and heads scale with hidden
    gqa = init.StudentShape(layers=2, hidden=64, intermediate=128, heads=8, kv_heads=2, head_dim=8)
    assert init.resolve_shape(gqa, heads=4).kv_heads == 1  # groups of 4, as in the source
    assert init.resolve_shape(gqa, heads=6).kv_heads == 2
    for shape_of, bad, word in ((source, dict(hidden=256), "--hidden 256"), (source, dict(layers=0), "--layers 0"),
                                (gqa, dict(heads=3, kv_heads=2), "multiple"), (source, dict(heads=2, kv_heads=1), "raise --kv-heads")):
        with pytest.raises(ConfigError, match=word):
            init.resolve_shape(shape_of, **bad)


def test_same_sizes_give_the_teachers_logits_and_save_a_loadable_model(tokenizer, rows, tmp_path):
    teacher = _model(_config(tokenizer))
    result = init.init_student((teacher, tokenizer), rows, out=tmp_path / "s", n_calibration=4)
    assert result.plan["layers"] == [0, 1, 2, 3]
    ids = _ids(tokenizer, rows)
    assert torch.equal(_logits(result.model, ids), _logits(teacher, ids))
    loaded = load_model(f"hf:{tmp_path / 's'}")
    assert torch.allclose(_logits(loaded.model, ids), _logits(teacher, ids), atol=1e-6)
    assert loaded.tokenizer.chat_template == tokenizer.chat_template
    record = json.loads((tmp_path / "s" / init.INIT_RECORD).read_text())
    assert record["kind"] == "distillery.student_init" and record["shape"]["layers"] == 4


# ---------------------------------------------------------------------------------------------
# Importance picks what to remove


def test_identity_layer_dead_heads_and_neurons_are_exactly_what_is_removed(tokenizer, rows):
    teacher = _model(_config(tokenizer, layers=4, heads=4, intermediate=64))
    dead_neurons = [3, 17, 40, 41, 63]
    with torch.no_grad():
        _make_identity(teacher.model.layers[2])
        for layer in teacher.model.layers:
            _kill_head(layer, 1, 8)
            layer.mlp.up_proj.weight[dead_neurons] = 0  # act(gate) * 0: the neuron never fires
    result = init.init_student((teacher, tokenizer), rows, layers=3, heads=3, intermediate=64 - len(dead_neurons),
                               n_calibration=8)
    assert result.plan["layers"] == [0, 1, 3]
    assert result.plan["heads"] == [[0, 2, 3]] * 3
    assert result.layer_scores[2] == pytest.approx(0.0, abs=1e-6)
    config = result.model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads, config.head_dim,
            config.intermediate_size, config.hidden_size) == (3, 3, 3, 8, 59, 32)
    kept_neurons = result.model.model.layers[0].mlp.up_proj.weight
    assert kept_neurons.shape == (59, 32) and bool((kept_neurons.abs().sum(dim=1) > 0).all())
    ids = _ids(tokenizer, rows)
    assert torch.allclose(_logits(result.model, ids), _logits(teacher, ids), atol=1e-5)


def test_residual_channels_that_stay_zero_are_the_hidden_channels_removed(tokenizer, rows):
    teacher = _model(_config(tokenizer, hidden=32))
    dead = [2, 9, 10, 30]
    with torch.no_grad():
        teacher.model.embed_tokens.weight[:, dead] = 0
        for layer in teacher.model.layers:
            layer.self_attn.o_proj.weight[dead] = 0
            layer.mlp.down_proj.weight[dead] = 0
    result = init.init_student((teacher, tokenizer), rows, hidden=28, heads=4, intermediate=64, n_calibration=8)
    kept = [c for c in range(32) if c not in dead]
    assert result.plan["hidden_kept"] == 28
    student = result.model
    # The student's embedding is the teacher's, minus exactly the dead columns (tied head alike).
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight[:, kept])
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()
    assert torch.equal(student.model.layers[1].self_attn.q_proj.weight, teacher.model.layers[1].self_attn.q_proj.weight[:, kept])
    assert torch.equal(student.model.norm.weight, teacher.model.norm.weight[kept])


@pytest.mark.parametrize(("heads", "kv_heads", "dead", "kept_heads", "kept_kv"), [
    (2, 1, [2, 3], [0, 1], [0]),  # a whole key/value group is dead: it goes, with its two query heads
    (2, 2, [1, 3], [0, 2], [0, 1]),  # one query head dead in each group: both groups stay, one head each
])
def test_grouped_query_attention_stays_consistent(tokenizer, rows, tmp_path, heads, kv_heads, dead, kept_heads, kept_kv):
    teacher = _model(_config(tokenizer, layers=2, heads=4, kv_heads=2))
    with torch.no_grad():
        for layer in teacher.model.layers:
            for head in dead:
                _kill_head(layer, head, 8)
    result = init.init_student((teacher, tokenizer), rows, out=tmp_path / "g", heads=heads, kv_heads=kv_heads,
                               n_calibration=8)
    assert result.plan["heads"] == [kept_heads] * 2 and result.plan["kv_heads"] == [kept_kv] * 2
    config = result.model.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (heads, kv_heads, 8)
    attention = result.model.model.layers[0].self_attn
    assert attention.k_proj.weight.shape == (kv_heads * 8, 32) and attention.o_proj.weight.shape == (32, heads * 8)
    ids = _ids(tokenizer, rows)
    expected = _logits(teacher, ids)
    assert torch.allclose(_logits(result.model, ids), expected, atol=1e-5)
    assert torch.allclose(_logits(load_model(f"hf:{tmp_path / 'g'}").model, ids), expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["mistral", "qwen2", "qwen3"])
def test_other_llama_family_layouts_untied_embeddings_and_biases(tokenizer, rows, tmp_path, kind):
    teacher = _model(_config(tokenizer, kind=kind, layers=2, heads=4, kv_heads=2, tied=False))
    same = init.init_student((teacher, tokenizer), rows, n_calibration=4)
    ids = _ids(tokenizer, rows)
    assert torch.allclose(_logits(same.model, ids), _logits(teacher, ids), atol=1e-6)
    result = init.init_student((teacher, tokenizer), rows, out=tmp_path / kind, layers=1, hidden=16, heads=2,
                               n_calibration=4)
    loaded = load_model(f"hf:{tmp_path / kind}")
    assert loaded.model.config.model_type == kind and not loaded.model.config.tie_word_embeddings
    assert loaded.model.lm_head.weight.shape == (len(tokenizer), 16)
    assert loaded.model.lm_head.weight.data_ptr() != loaded.model.model.embed_tokens.weight.data_ptr()
    assert torch.allclose(_logits(loaded.model, ids), _logits(result.model, ids), atol=1e-6)


def test_unsupported_architectures_are_refused(tokenizer, rows):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(ConfigError, match="Llama-family"):
        init.init_student((gpt2, tokenizer), rows, layers=1)


# ---------------------------------------------------------------------------------------------
# The bundled world teacher: the point of starting from it


@pytest.fixture(scope="module")
def world_rows():
    from distillery.distill.trainer import chat_rows
    from distillery.world.expert import solve
    from distillery.world.tasks import generate_tasks

    return chat_rows([solve(task) for task in generate_tasks("train", 24, seed=0)])


def test_world_teacher_pruned_to_student_xs_size_starts_far_better_than_random(world_rows, tmp_path):
    from distillery.world.models import build_student

    result = init.init_student("world:teacher", world_rows, out=tmp_path / "xs", layers=2, hidden=48,
                               intermediate=128, heads=1, n_calibration=24)
    reference = build_student("student-xs")
    assert result.parameters["student"] == reference.num_parameters() == 129_264  # the student-xs size
    assert result.plan["layers"][0] == 0 and len(result.layer_scores) == 4
    calibration = result.calibration
    assert calibration["student_loss"] < calibration["random_init_loss"] - 0.5
    sequences = init.calibration_sequences(result.tokenizer, world_rows, n=24)
    assert init.calibration_loss(result.model, sequences, pad_id=2) < init.calibration_loss(reference, sequences, pad_id=2)

    loaded = load_model(f"hf:{tmp_path / 'xs'}", max_new_tokens=8)
    turn = loaded.generate([Message(role="user", content="How much does the Nova Lamp cost?")])[0]
    assert turn.text or turn.tool_calls
    assert loaded.model.config.tie_word_embeddings and loaded.model.config.head_dim == 48


@pytest.mark.parametrize("metric", ["cosine", "loss"])
def test_world_teacher_layer_made_identity_is_the_layer_dropped(world_rows, metric):
    from distillery.world.models import TEACHER_DIR

    teacher = AutoModelForCausalLM.from_pretrained(TEACHER_DIR).eval()
    with torch.no_grad():
        _make_identity(teacher.model.layers[1])
    tokenizer = load_model("world:teacher").tokenizer
    result = init.init_student((teacher, tokenizer), world_rows, layers=3, layer_metric=metric, n_calibration=16)
    assert result.plan["layers"] == [0, 2, 3]
    assert result.layer_scores[1] == pytest.approx(0.0, abs=1e-6)
    assert min(result.layer_scores[i] for i in (0, 2, 3)) > 1e-3


def test_the_pruned_student_trains_with_distillery_train(tokenizer, rows, tmp_path):
    from distillery.distill.trainer import train_student

    teacher = _model(_config(tokenizer, layers=2))
    init.init_student((teacher, tokenizer), rows, out=tmp_path / "init", layers=1, hidden=16, n_calibration=4)
    out = train_student(f"hf:{tmp_path / 'init'}", rows, out=tmp_path / "trained", max_steps=2, batch_size=2,
                        learning_rate=1e-3, self_check=0, progress=False, logging_steps=1)
    trained = load_model(f"hf:{out}")
    assert trained.model.config.hidden_size == 16 and trained.model.config.num_hidden_layers == 1


# ---------------------------------------------------------------------------------------------
# The command line


def test_cli_student_init(tokenizer, rows, tmp_path, capsys):
    from distillery.cli import run

    source = save_tiny_model(tmp_path / "teacher", model=_model(_config(tokenizer, layers=2)), tokenizer=tokenizer)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "student"
    status = run(["student", "init", "--from", f"hf:{source}", "--calibration", str(data), "--layers", "1",
                  "--hidden", "16", "--out", str(out), "--n-calibration", "4"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "random student of the same size" in printed and "distillery train --student hf:" in printed
    record = json.loads((out / "init.json").read_text())
    assert record["shape"]["hidden"] == 16 and record["shape"]["heads"] == 2  # 4 heads, scaled with --hidden
    assert load_model(f"hf:{out}").model.config.num_hidden_layers == 1

    assert run(["student", "init", "--from", f"hf:{source}", "--calibration", str(data), "--hidden", "64",
                "--out", str(tmp_path / "too-big")]) == 1
    assert "--hidden 64" in capsys.readouterr().err
    assert run(["student", "init", "--from", f"hf:{source}", "--calibration", str(data), "--heads", "0",
                "--out", str(tmp_path / "x")]) == 2
    assert run(["student", "init", "--from", f"hf:{source}", "--calibration", str(data), "--layer-metric", "random",
                "--out", str(tmp_path / "x")]) == 2
    capsys.readouterr()
    assert run(["student", "init", "--help"]) == 0
    help_text = capsys.readouterr().out
    for option in ("--from", "--calibration", "--layers", "--hidden", "--intermediate", "--heads", "--kv-heads",
                   "--layer-metric"):
        assert option in help_text


def test_a_pruned_student_gets_a_recovery_learning_rate_by_default(tmp_path):
    from distillery.distill.trainer import default_learning_rate

    (tmp_path / "init.json").write_text("{}")
    assert default_learning_rate(f"hf:{tmp_path}", lora=False, parameters=500_000) == 1e-3
    assert default_learning_rate(str(tmp_path), lora=False, parameters=500_000_000) == 1e-4
    assert default_learning_rate(f"hf:{tmp_path}", lora=True, parameters=500_000) == 2e-4
    (tmp_path / "init.json").unlink()
    assert default_learning_rate(f"hf:{tmp_path}", lora=False, parameters=500_000) == 2e-5
