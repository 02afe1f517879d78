import pytest

from distillery.errors import ConfigError
from distillery.pricing import cost_usd, price_for, price_table, training_price_per_mtok
from distillery.trajectory import Usage


def test_list_prices_from_table():
    opus = price_for("anthropic:claude-opus-4-6")
    assert (opus.input, opus.output) == (5.0, 25.0)
    assert price_for("openai:gpt-4o-mini").input == 0.15  # longest prefix wins over gpt-4o
    assert price_for("openai:gpt-4o-2024-08-06").output == 10.0
    assert price_for("hf:./my-model") is None


def test_cost_counts_every_token_kind_and_batch_discount():
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000, cache_read_input_tokens=1_000_000, cache_creation_input_tokens=0)
    assert cost_usd("anthropic:claude-opus-4-6", usage) == pytest.approx(5.0 + 2.5 + 0.5)
    assert price_for("anthropic:claude-opus-4-6").cost(usage, batch=True) == pytest.approx(4.0)
    assert cost_usd("hf:./local", usage) == 0.0


def test_world_models_are_priced_as_labelled_stand_ins():
    assert price_for("world:teacher").stand_in_for == "anthropic:claude-opus-4-6"
    assert price_for("world:student-xs").stand_in_for == "self-hosted small model"


def test_training_price_and_custom_table(tmp_path, monkeypatch):
    assert training_price_per_mtok("openai:gpt-4o-mini") == 3.0
    custom = tmp_path / "prices.toml"
    custom.write_text("[openai.gpt-4o]\ninput = 1.0\noutput = 2.0\n")
    monkeypatch.setenv("DISTILLERY_PRICES", str(custom))
    assert price_for("openai:gpt-4o").input == 1.0
    bad = tmp_path / "bad.toml"
    bad.write_text("[openai\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        price_table(bad)


def test_a_price_that_is_not_a_price_is_one_line_naming_the_entry(tmp_path, monkeypatch):
    import pytest

    from distillery.errors import ConfigError
    from distillery.pricing import _load_table, price_for

    for number, bad in enumerate(("nan", "-1.0", "inf", '"free"', "true")):
        prices = tmp_path / f"prices-{number}.toml"
        prices.write_text(f"[openai.gpt-4o]\ninput = {bad}\noutput = 10.0\n")
        monkeypatch.setenv("DISTILLERY_PRICES", str(prices))
        _load_table.cache_clear()
        with pytest.raises(ConfigError, match=rf"{prices}: \[openai.gpt-4o\].input: .* is not a price"):
            price_for("openai:gpt-4o")
