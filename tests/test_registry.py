"""`distillery.registry`: how a world plugs in, and that core asks it instead of naming the world."""

import subprocess
import sys

import pytest

from distillery import registry
from distillery.errors import ConfigError
from distillery.models import load_model
from distillery.pricing import parameter_count, price_for


def test_import_distillery_does_not_import_the_world():
    code = ("import sys, distillery, distillery.models, distillery.tools, distillery.pricing, distillery.registry; "
            "sys.exit(any(m.startswith('distillery.world') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_bundled_world_registers_itself_on_the_first_lookup():
    family = registry.model_family("world:teacher")
    assert family is not None and family.simulated and family.tokenizer == "world"
    assert registry.is_untrained("world:student-xs") and not registry.is_untrained("world:teacher")
    assert not registry.is_untrained("hf:./runs/x") and not registry.is_untrained(("model", "tokenizer"))
    assert registry.is_simulated("world:teacher") and not registry.is_simulated("openai:gpt-4o")
    assert registry.parameter_config("world:student-xs").name == "student-xs.json"
    assert registry.parameter_config("world:student-xs-kd") is None
    from distillery.world.tasks import TASK_ID_PREFIX, generate_tasks

    kind = registry.task_kind(generate_tasks("test", 1)[0].id)
    assert kind.id_prefix == TASK_ID_PREFIX
    assert kind is registry.default_task_kind() and registry.is_simulated_task("world-test-0-00001")
    assert registry.task_kind("my-task-1") is None
    assert registry.toolbox("world") is registry.default_toolbox() is registry.toolbox(registry.default_toolbox().path)
    assert "distillery.world.cli" in registry.command_modules()


def test_unknown_names_fail_in_one_line():
    with pytest.raises(ConfigError, match="unknown tokenizer 'nope'; registered: .*world"):
        registry.load_tokenizer("nope")
    with pytest.raises(ConfigError, match="unknown model URI 'nope:x'; expected one of .*world:"):
        load_model("nope:x")


def test_another_world_plugs_in_through_the_same_registries(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_MODEL_FAMILIES", dict(registry._MODEL_FAMILIES))
    monkeypatch.setattr(registry, "_TOKENIZERS", dict(registry._TOKENIZERS))
    monkeypatch.setattr(registry, "_TASK_KINDS", dict(registry._TASK_KINDS))
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "llama", "vocab_size": 32, "hidden_size": 8, "intermediate_size": 16, '
                      '"num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2}')
    registry.register_model_family("sim", lambda name, **options: (name, options), tokenizer="sim",
                                   config=lambda name: config if name == "small" else None, untrained=("small",),
                                   simulated=True)
    registry.register_tokenizer("sim", lambda: "the sim tokenizer")
    registry.register_task_kind("sim", id_prefix="sim-")
    assert load_model("sim:small", seed=3) == ("small", {"seed": 3})
    assert registry.tokenizer_for("sim:small") == "the sim tokenizer"
    assert registry.is_untrained("sim:small") and registry.is_simulated_task("sim-1")
    assert parameter_count("sim:small") and price_for("sim:small").basis.startswith("self-hosted estimate")
    assert price_for("sim:big") is None


def test_distillery_plugins_names_more_registering_modules(monkeypatch, tmp_path):
    (tmp_path / "my_world_plugin.py").write_text(
        "from distillery import registry\nregistry.register_tokenizer('mine', lambda: 'my tokenizer')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_TOKENIZERS", dict(registry._TOKENIZERS))
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setenv("DISTILLERY_PLUGINS", " my_world_plugin , ")
    assert registry.load_tokenizer("mine") == "my tokenizer"
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setenv("DISTILLERY_PLUGINS", "no_such_plugin_module")
    with pytest.raises(ConfigError, match="DISTILLERY_PLUGINS: cannot import no_such_plugin_module"):
        registry.load_plugins()
