"""Turn token usage into dollars, from the editable table in `prices.toml`.

Prices are never hard-coded: `prices.toml` ships with current list prices, and
`DISTILLERY_PRICES=/path/to/prices.toml` points at your own (e.g. negotiated rates).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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


def price_for(uri: str, *, table: dict | None = None) -> Price | None:
    """The price of a model URI such as `anthropic:claude-opus-4-6`, or None when unknown.

    A model name matches the longest table key it starts with, so `claude-opus-4-6-20260101`
    is priced as `claude-opus-4-6`. `world:` students of any size are priced as `world.student`.
    """
    source = _table_path() if table is None else "prices"
    table = table if table is not None else price_table()
    scheme, _, name = uri.partition(":")
    section = table.get(scheme, {})
    if scheme == "world" and name not in section:
        name = "student"
    matches = [key for key in section if name == key or name.startswith(key + "-") or name.startswith(key)]
    if not matches:
        return None
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
    )


def _dollars(entry: dict, field: str, where: str, default: object = None) -> float:
    """A price field as a finite, non-negative number; otherwise one line naming the table entry."""
    value = entry.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ConfigError(f"{where}.{field}: {value!r} is not a price (a finite number >= 0, dollars per million tokens)")
    return float(value)


def _table_path() -> str:
    return str(os.environ.get("DISTILLERY_PRICES") or DEFAULT_PRICES)


def cost_usd(uri: str, usage: Usage, *, batch: bool = False) -> float:
    """Dollars for one call's usage; 0.0 for models with no price (local models you run yourself)."""
    price = price_for(uri)
    return price.cost(usage, batch=batch) if price else 0.0


def training_price_per_mtok(model: str, *, table: dict | None = None) -> float | None:
    """Hosted fine-tuning price per million training tokens, when the table has one."""
    table = table if table is not None else price_table()
    name = model.partition(":")[2] or model
    section = table.get("training", {})
    matches = [key for key in section if name.startswith(key)]
    return float(section[max(matches, key=len)]["train"]) if matches else None
