import pytest

from distillery.errors import ConfigError
from distillery.pricing import (
    cost_usd,
    note_parameter_count,
    parameter_count,
    price_for,
    price_table,
    self_hosted_price,
    training_price_per_mtok,
)
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


def test_world_teacher_is_a_labelled_stand_in_and_world_students_cost_their_size():
    teacher = price_for("world:teacher")
    assert teacher.stand_in_for == "anthropic:claude-opus-4-6" and teacher.basis == "stand-in price"
    small, large = price_for("world:student-xs"), price_for("world:student-s")
    assert small.stand_in_for is None and "129,264 parameters" in small.basis
    # 479,904 vs 129,264 parameters: the price is proportional to the parameter count.
    assert large.output / small.output == pytest.approx(479_904 / 129_264)
    assert 0 < small.input < small.output  # prefill runs at a higher utilization than decoding


SELF_HOSTED = {"self_hosted": {"dollars_per_hour": 3600.0, "peak_flops": 1e12,
                               "prefill_utilization": 0.5, "decode_utilization": 0.1}}


def test_self_hosted_price_is_compute_per_token_at_the_accelerator_hour_price():
    # 1M parameters: 2e6 FLOPs a token, 2e12 per million tokens; at 1e12 FLOP/s peak that is 4 s of
    # prefill at 50% and 20 s of decode at 10%, at one dollar per second.
    price = self_hosted_price(1_000_000, table=SELF_HOSTED)
    assert (price.input, price.output) == (pytest.approx(4.0), pytest.approx(20.0))
    assert price.cost(Usage(input_tokens=500_000, output_tokens=100_000)) == pytest.approx(2.0 + 2.0)
    # The shipped table: an 8B model at about $0.03 / $0.22 per million tokens (documented in prices.toml).
    shipped = self_hosted_price(8_000_000_000)
    assert (round(shipped.input, 2), round(shipped.output, 2)) == (0.03, 0.22)


def test_an_hf_directory_is_priced_from_its_safetensors_and_an_entry_overrides(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp_path / "student")
    n_params = sum(p.numel() for p in model.parameters())
    assert parameter_count(f"hf:{tmp_path / 'student'}") == n_params
    (tmp_path / "config-only").mkdir()
    config.save_pretrained(tmp_path / "config-only")  # no weights: counted on the meta device
    assert parameter_count(f"hf:{tmp_path / 'config-only'}") == n_params
    table = {**SELF_HOSTED, "hf": {"my-student": {"input": 1.0, "output": 2.0}}}
    assert price_for(f"hf:{tmp_path / 'student'}", table=table).output == pytest.approx(2e-5 * n_params)  # 2·n FLOPs/token, 1e12 FLOP/s at 10%, $1/s
    assert price_for("hf:my-student", table=table).output == 2.0  # an explicit entry wins
    assert price_for("hf:missing-dir", table=table) is None  # unknown size: no price, not a guess


def test_a_model_loaded_in_this_process_is_priced_by_its_size_under_any_uri():
    note_parameter_count("world:student-xs-kd", 250_000)
    assert parameter_count("world:student-xs-kd") == 250_000
    assert price_for("world:student-xs-kd", table=SELF_HOSTED).output == pytest.approx(5.0)


def test_a_bad_self_hosted_table_is_one_line_naming_the_field():
    for field, value in (("decode_utilization", 0.0), ("prefill_utilization", 1.5), ("peak_flops", 0.0)):
        table = {"self_hosted": {**SELF_HOSTED["self_hosted"], field: value}}
        with pytest.raises(ConfigError, match=rf"\[self_hosted\]\.{field}: "):
            self_hosted_price(1000, table=table, source="prices.toml")
    with pytest.raises(ConfigError, match=r"no \[self_hosted\] table"):
        self_hosted_price(1000, table={}, source="prices.toml")


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
