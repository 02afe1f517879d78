"""World models by URI: `world:teacher` (bundled, trained) and `world:student-s` / `world:student-xs`.

`world:teacher` is the packaged checkpoint loaded through the ordinary HF provider (`HFModel`),
exactly as `hf:<dir>` would load it. The student URIs are freshly initialised (untrained!) models
built from the shipped configs and the world tokenizer: a starting point for distillation, not a
model to evaluate as is. Their sizes are about 1/4 and 1/16 of the teacher's parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillery.errors import ConfigError

ASSETS_DIR = Path(__file__).with_name("assets")
TOKENIZER_DIR = ASSETS_DIR / "tokenizer"
TEACHER_DIR = ASSETS_DIR / "teacher"
CONFIGS_DIR = ASSETS_DIR / "configs"
CONFIG_NAMES = ("teacher", "student-s", "student-xs")
STUDENT_NAMES = ("student-s", "student-xs")


def world_asset_dir(name: str) -> Path:
    """The packaged directory for `teacher` (weights + tokenizer), `tokenizer` or `configs`."""
    dirs = {"teacher": TEACHER_DIR, "tokenizer": TOKENIZER_DIR, "configs": CONFIGS_DIR}
    if name not in dirs:
        raise ConfigError(f"unknown world asset {name!r}; known: {', '.join(dirs)}")
    return dirs[name]


def world_config_path(name: str) -> Path:
    """A shipped model config by name (teacher, student-s, student-xs), or a path to a config.json."""
    if name in CONFIG_NAMES:
        return CONFIGS_DIR / f"{name}.json"
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"--config {name!r}: neither a shipped config ({', '.join(CONFIG_NAMES)}) nor a file")
    return path


def shipped_config(name: str) -> Path | None:
    """The shipped config.json of a world model name, or None (what prices it by its size)."""
    return CONFIGS_DIR / f"{name}.json" if name in CONFIG_NAMES else None


def load_world_tokenizer() -> Any:
    """The world tokenizer (a `PreTrainedTokenizerFast` with the Hermes/Qwen chat template)."""
    from distillery.world.tokenizer import load_tokenizer

    if not (TOKENIZER_DIR / "tokenizer.json").is_file():
        raise ConfigError(f"{TOKENIZER_DIR}: no world tokenizer; run `distillery world train-tokenizer`")
    return load_tokenizer(TOKENIZER_DIR)


def build_student(name: str, *, seed: int = 0) -> Any:
    """A freshly initialised (untrained) causal LM from a shipped config (a student size, or teacher), seeded."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig.from_json_file(str(world_config_path(name)))
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    finally:
        torch.random.set_rng_state(generator_state)
    tokenizer = load_world_tokenizer()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def load_world_model(name: str, **options: Any) -> Any:
    """The `world:` provider: `world:teacher`, or an untrained `world:student-s` / `world:student-xs`.

    Options go to `HFModel` (device, max_new_tokens, num_threads...); students also take `seed`.
    """
    from distillery.models.hf import HFModel

    if name == "teacher":
        if not (TEACHER_DIR / "model.safetensors").is_file():
            raise ConfigError(f"{TEACHER_DIR}: the bundled teacher is missing; run `distillery world train-teacher`")
        return HFModel(str(TEACHER_DIR), uri="world:teacher", **options)
    if name in STUDENT_NAMES:
        seed = options.pop("seed", 0)
        return HFModel(f"world:{name}", model=build_student(name, seed=seed), tokenizer=load_world_tokenizer(),
                       uri=f"world:{name}", **options)
    raise ConfigError(f"unknown world model {name!r}; known: world:teacher, world:student-s, world:student-xs")
