"""Turn token usage into dollars, from the editable table in `prices.toml`.

Prices are never hard-coded: `prices.toml` ships with current list prices, and
`DISTILLERY_PRICES=/path/to/prices.toml` points at your own (e.g. negotiated rates).

Hosted models are priced from their list price. Local models (`hf:` checkpoints, the model
families a world registers) have none, so they are priced by what serving them costs
(`[self_hosted]`): compute per token from the parameter count, at a stated accelerator-hour
price. A pruned or larger student then costs what its size implies, instead of nothing.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from distillery import registry
from distillery.errors import ConfigError
from distillery.trajectory import Usage

DEFAULT_PRICES = Path(__file__).with_name("prices.toml")


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float
    batch_discount: float = 1.0
    stand_in_for: str | None = None
    basis: str = "list price"  # where the figure comes from, for reports


    def cost(self, usage: Usage, *, batch: bool = False) -> float:
        dollars = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_creation_input_tokens * self.cache_write
            + usage.cache_read_input_tokens * self.cache_read
        ) / 1_000_000
        return dollars * (self.batch_discount if batch else 1.0)


@lru_cache(maxsize=8)
def _load_table(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: price table not found (DISTILLERY_PRICES)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def price_table(path: str | Path | None = None) -> dict:
    return _load_table(str(path or _table_path()))


def price_for(uri: str, *, table: dict | None = None, n_params: int | None = None) -> Price | None:
    """The price of a model URI such as `anthropic:claude-opus-4-6`, or None when unknown.

    A model name matches the longest table key it starts with, so `claude-opus-4-6-20260101`
    is priced as `claude-opus-4-6`. A local model (`hf:`, a registered family's) without an entry of
    its own is priced by `[self_hosted]` from `n_params`, or from the parameter count its URI leads
    to (an `hf:` directory, a family's config, or a model loaded earlier in this process).
    """
    source = _table_path() if table is None else "prices"
    table = table if table is not None else price_table()
    scheme, _, name = uri.partition(":")
    section = table.get(scheme, {})
    matches = [key for key in section if name == key or name.startswith(key + "-") or name.startswith(key)]
    if not matches:
        if not is_local(uri):
            return None
        n_params = n_params or parameter_count(uri)
        return self_hosted_price(n_params, table=table, source=source) if n_params else None
    key = max(matches, key=len)
    entry = section[key]
    where = f"{source}: [{scheme}.{key}]"
    return Price(
        input=_dollars(entry, "input", where),
        output=_dollars(entry, "output", where),
        cache_write=_dollars(entry, "cache_write", where, default=entry.get("input")),
        cache_read=_dollars(entry, "cache_read", where, default=entry.get("input")),
        batch_discount=_dollars(entry, "batch_discount", where, default=1.0),
        stand_in_for=entry.get("stand_in_for"),
        basis="stand-in price" if entry.get("stand_in_for") else "list price",
    )


def is_local(uri: str) -> bool:
    """An `hf:` checkpoint or a model of a family a world registered: weights, no list price."""
    return uri.partition(":")[0] == "hf" or registry.model_family(uri) is not None

_SELF_HOSTED_FIELDS = ("dollars_per_hour", "peak_flops", "prefill_utilization", "decode_utilization")


def self_hosted_price(n_params: int, *, table: dict | None = None, source: str | None = None) -> Price:
    """What a model of `n_params` parameters costs per million tokens to serve yourself.

    A token costs 2·n_params FLOPs; at `utilization` of the accelerator's peak that is a number of
    accelerator-seconds, billed at its hourly price. Prompt tokens (prefill) run batched and reach a
    far higher utilization than generated ones (decode, bound by memory bandwidth).
    """
    source = source or _table_path()
    table = table if table is not None else price_table()
    entry = table.get("self_hosted")
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: no [self_hosted] table, needed to price local models")
    where = f"{source}: [self_hosted]"
    dollars_per_hour, peak, prefill, decode = (_dollars(entry, f, where) for f in _SELF_HOSTED_FIELDS)
    for field, value in (("peak_flops", peak), ("prefill_utilization", prefill), ("decode_utilization", decode)):
        if value <= 0 or (field != "peak_flops" and value > 1):
            raise ConfigError(f"{where}.{field}: {value!r} must be {'> 0' if field == 'peak_flops' else 'in (0, 1]'}")

    def per_million(utilization: float) -> float:
        seconds = 1_000_000 * 2 * n_params / (peak * utilization)
        return seconds * dollars_per_hour / 3600

    per_input = per_million(prefill)
    return Price(input=per_input, output=per_million(decode), cache_write=per_input, cache_read=per_input,
                 basis=f"self-hosted estimate: {n_params:,} parameters on {entry.get('accelerator', 'an accelerator')} "
                       f"at ${dollars_per_hour:g}/h")


_KNOWN_PARAMETER_COUNTS: dict[str, int] = {}


def note_parameter_count(uri: str, n_params: int) -> None:
    """Remember a loaded model's size, so that runs priced later in this process (evaluation over
    its trajectories) find it even when the URI names no directory (e.g. a world's `world:student-xs-kd`)."""
    _KNOWN_PARAMETER_COUNTS[uri] = int(n_params)


def parameter_count(uri: str) -> int | None:
    """The parameter count a local model URI leads to, without loading its weights; None if unknown."""
    if uri in _KNOWN_PARAMETER_COUNTS:
        return _KNOWN_PARAMETER_COUNTS[uri]
    scheme, _, name = uri.partition(":")
    if scheme == "hf":
        return _directory_parameter_count(Path(name).expanduser())
    config = registry.parameter_config(uri)
    return _directory_parameter_count(config) if config else None


def _directory_parameter_count(path: Path) -> int | None:
    """Parameters of an HF model folder (read from the safetensors headers) or of a bare config.json
    (counted on the meta device, so nothing is allocated). A PEFT adapter adds its local base model."""
    key = str(path.resolve()) if path.exists() else ""
    return _cached_parameter_count(key) if key else None


@lru_cache(maxsize=64)
def _cached_parameter_count(path_str: str) -> int | None:
    path = Path(path_str)
    if path.is_file():
        return _config_parameter_count(path) if path.suffix == ".json" else None
    weights = sorted(path.glob("*.safetensors"))
    if weights:
        from safetensors import safe_open

        total = 0
        for file in weights:
            with safe_open(str(file), framework="pt") as f:
                for tensor in f.keys():
                    total += math.prod(f.get_slice(tensor).get_shape())
        adapter = path / "adapter_config.json"
        if adapter.is_file():
            base = json.loads(adapter.read_text()).get("base_model_name_or_path") or ""
            base_count = _directory_parameter_count(Path(base)) if base else None
            return total + base_count if base_count else None
        return total
    config = path / "config.json"
    return _config_parameter_count(config) if config.is_file() else None


def _config_parameter_count(config_path: Path) -> int | None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(config_path))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError):
        return None
    return sum(p.numel() for p in model.parameters())


def _dollars(entry: dict, field: str, where: str, default: object = None) -> float:
    """A price field as a finite, non-negative number; otherwise one line naming the table entry."""
    value = entry.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ConfigError(f"{where}.{field}: {value!r} is not a price (a finite number >= 0, dollars per million tokens)")
    return float(value)


def _table_path() -> str:
    return str(os.environ.get("DISTILLERY_PRICES") or DEFAULT_PRICES)


def cost_usd(uri: str, usage: Usage, *, batch: bool = False, n_params: int | None = None) -> float:
    """Dollars for one call's usage; 0.0 for a model with no price (a local model of unknown size)."""
    price = price_for(uri, n_params=n_params)
    return price.cost(usage, batch=batch) if price else 0.0


def training_price_per_mtok(model: str, *, table: dict | None = None) -> float | None:
    """Hosted fine-tuning price per million training tokens, when the table has one."""
    table = table if table is not None else price_table()
    name = model.partition(":")[2] or model
    section = table.get("training", {})
    matches = [key for key in section if name.startswith(key)]
    return float(section[max(matches, key=len)]["train"]) if matches else None
