import json
import time
from typing import Literal

import pytest

from distillery.errors import ConfigError
from distillery.tools import Tool, ToolBox, load_tool_specs, tool
from distillery.trajectory import ToolCall, ToolSpec


@tool
def convert(value: float, unit: Literal["km", "mi"], precision: int = 2, note: str | None = None) -> dict:
    """Convert a distance.

    Args:
        value: The distance to convert.
        unit: The unit of `value`; the result is in the other unit.
        precision: Decimal places,
            rounded half to even.
    """
    factor = 0.621371 if unit == "km" else 1 / 0.621371
    return {"value": round(value * factor, precision)}


@tool(timeout_s=0.2)
def slow() -> str:
    """Sleeps too long."""
    time.sleep(2)
    return "late"


@tool
def broken(x: int) -> int:
    """Always fails."""
    raise RuntimeError(f"bad x={x}")


def test_schema_from_hints_and_docstring():
    spec = convert.spec
    assert spec.name == "convert"
    assert spec.description == "Convert a distance."
    props = spec.parameters["properties"]
    assert props["value"] == {"type": "number", "description": "The distance to convert."}
    assert props["unit"]["enum"] == ["km", "mi"] and props["unit"]["type"] == "string"
    assert props["precision"]["default"] == 2
    assert props["precision"]["description"] == "Decimal places, rounded half to even."
    assert props["note"]["type"] == ["string", "null"]
    assert spec.parameters["required"] == ["value", "unit"]


def test_valid_call_runs_and_returns_json():
    result = convert.run(ToolCall(id="c1", name="convert", arguments={"value": 10, "unit": "km"}))
    assert not result.is_error
    assert json.loads(result.content) == {"value": 6.21}
    assert result.tool_call_id == "c1"


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        ({"value": "ten", "unit": "km"}, "'ten' is not of type 'number'"),
        ({"value": 1}, "'unit' is a required property"),
        ({"value": 1, "unit": "parsec"}, "is not one of"),
        ({"value": 1, "unit": "km", "extra": 1}, "Additional properties"),
    ],
)
def test_invalid_arguments_become_error_results(arguments, fragment):
    result = convert.run(ToolCall(name="convert", arguments=arguments))
    assert result.is_error
    assert fragment in result.content


def test_exception_and_timeout_become_error_results():
    failed = broken.run(ToolCall(name="broken", arguments={"x": 3}))
    assert failed.is_error and "RuntimeError: bad x=3" in failed.content
    start = time.perf_counter()
    timed_out = slow.run(ToolCall(name="slow", arguments={}))
    assert timed_out.is_error and "timed out after 0.2s" in timed_out.content
    assert time.perf_counter() - start < 1.5


def test_unparsed_arguments_and_unknown_tool():
    box = ToolBox([convert, broken])
    bad_json = box.run(ToolCall(name="convert", raw_arguments="{value:", parse_error="invalid JSON"))
    assert bad_json.is_error and "not valid JSON" in bad_json.content
    unknown = box.run(ToolCall(name="teleport", arguments={}))
    assert unknown.is_error and "unknown tool 'teleport'" in unknown.content and "convert" in unknown.content


def test_duplicate_tool_names_are_refused():
    with pytest.raises(ConfigError, match="two tools are named 'convert'"):
        ToolBox([convert, convert])


def test_invalid_json_schema_is_a_one_line_config_error(tmp_path):
    path = tmp_path / "tools.json"
    path.write_text(json.dumps([{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "nope"}}}}]))
    with pytest.raises(ConfigError) as info:
        load_tool_specs(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "tool 'f'" in message
    with pytest.raises(ConfigError):
        Tool(lambda: 1, ToolSpec(name="g", parameters={"type": "object", "properties": {"x": {"type": 5}}}))


def test_schemas_load_in_openai_and_anthropic_spellings(tmp_path):
    path = tmp_path / "tools.json"
    params = {"type": "object", "properties": {"q": {"type": "string"}}}
    path.write_text(
        json.dumps(
            [
                {"type": "function", "function": {"name": "a", "description": "A", "parameters": params}},
                {"name": "b", "input_schema": params},
            ]
        )
    )
    specs = load_tool_specs(path)
    assert [s.name for s in specs] == ["a", "b"]
    assert specs[1].parameters == params


def test_malformed_schema_file_names_line(tmp_path):
    path = tmp_path / "tools.json"
    path.write_text('[\n{"name": "a",\n')
    with pytest.raises(ConfigError, match=r"tools.json:\d+: not valid JSON"):
        load_tool_specs(path)
