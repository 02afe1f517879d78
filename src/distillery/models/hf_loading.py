"""Loading an `hf:` model directory: the model, its tokenizer, and the token ids that end a turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distillery.errors import ConfigError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _model_dir(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"hf:{name_or_path}: no such directory; hf: URIs name a local model directory "
            "(config.json, weights, tokenizer); nothing is downloaded"
        )
    if not (path / "config.json").is_file():
        raise ConfigError(f"hf:{name_or_path}: no config.json in {path}; is this a transformers model directory?")
    return path


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise ConfigError(
            f"hf:{path}: no tokenizer files ({', '.join(_TOKENIZER_FILES)}); "
            "save the tokenizer next to the model with tokenizer.save_pretrained(path)"
        )
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"hf:{path}: cannot load the tokenizer: {_one_line(exc)}") from None


def _load_model(path: Path, *, device: str, dtype: str | torch.dtype | None) -> Any:
    from transformers import AutoModelForCausalLM

    if isinstance(dtype, str) and dtype != "auto":
        if dtype not in _DTYPES:
            raise ConfigError(f"hf:{path}: unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)} or auto")
        dtype = _DTYPES[dtype]
    if dtype is None:
        # float32 on CPU (bfloat16 matmuls are slow there); elsewhere the checkpoint's own dtype.
        dtype = torch.float32 if str(device).startswith("cpu") else "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"hf:{path}: cannot load the model: {_one_line(exc)}") from None
    return model.to(device).eval()


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a turn: the tokenizer's eos plus the model's generation_config eos ids.

    Qwen2.5 lists both `<|im_end|>` and `<|endoftext|>` in its generation config.
    """
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos:
        ids.update(int(i) for i in config_eos)
    return ids



def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (the CLI prints errors as one line), shortened."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
