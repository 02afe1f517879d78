from datetime import datetime, timezone

from distillery.trajectory import (
    DistillationSample,
    Outcome,
    Step,
    ThinkingBlock,
    TokenLogprob,
    ToolCall,
    ToolResult,
    ToolSpec,
    TopLogprob,
    Trajectory,
    Usage,
)


def rich_trajectory() -> Trajectory:
    call_a = ToolCall(id="call_a", name="get_price", arguments={"sku": "SKU-1", "currency": "EUR"})
    call_b = ToolCall(id="call_b", name="get_stock", arguments={"sku": "SKU-1", "city": "Berlin"})
    bad = ToolCall(id="call_c", name="get_stock", raw_arguments="{city: Berlin", parse_error="invalid JSON")
    return Trajectory(
        task_id="t-1",
        query="Price and stock of SKU-1 in Berlin?",
        system="Be brief.",
        tools=[ToolSpec(name="get_price", description="d", parameters={"type": "object", "properties": {}})],
        steps=[
            Step(
                text="I need price and stock.",
                thinking=[
                    ThinkingBlock(thinking="Two lookups in parallel.", signature="sig=="),
                    ThinkingBlock(type="redacted_thinking", data="opaque"),
                ],
                tool_calls=[call_a, call_b, bad],
                tool_results=[
                    ToolResult(tool_call_id="call_a", name="get_price", content="3.50"),
                    ToolResult(tool_call_id="call_b", name="get_stock", content="12"),
                    ToolResult(tool_call_id="call_c", name="get_stock", content="Error", is_error=True),
                ],
                stop_reason="tool_use",
                logprobs=[
                    TokenLogprob(token="<tool_call>", logprob=-0.01, token_id=5, top=[TopLogprob(token="I", logprob=-4.2)])
                ],
                usage=Usage(input_tokens=100, output_tokens=20, cache_read_input_tokens=50),
                model="anthropic:claude-opus-4-6",
                latency_s=0.5,
                cost_usd=0.001,
                provider_content=[{"type": "thinking", "thinking": "Two lookups in parallel.", "signature": "sig=="}],
                producer="tier-1",
                confidence=0.42,
                escalated=True,
            ),
            Step(text="3.50 EUR, 12 units.", usage=Usage(input_tokens=150, output_tokens=8), cost_usd=0.002),
        ],
        outcome=Outcome(success=True, score=1.0, checker="contains", expected=["3.50", "12"]),
        model="anthropic:claude-opus-4-6",
        sample_index=2,
        tags=["tier:medium", "family:price"],
        metadata={"split": "test", "nested": {"a": [1, 2.5, None]}},
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
    )


def test_json_round_trip_is_lossless():
    trajectory = rich_trajectory()
    again = Trajectory.model_validate_json(trajectory.model_dump_json())
    assert again == trajectory
    assert again.model_dump_json() == trajectory.model_dump_json()


def test_derived_totals():
    trajectory = rich_trajectory()
    assert trajectory.final_answer == "3.50 EUR, 12 units."
    assert trajectory.usage.input_tokens == 250
    assert trajectory.usage.cache_read_input_tokens == 50
    assert abs(trajectory.cost_usd - 0.003) < 1e-12
    assert [c.id for c in trajectory.tool_calls] == ["call_a", "call_b", "call_c"]


def test_messages_replay_the_conversation():
    messages = rich_trajectory().messages()
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "tool", "tool", "assistant"]
    assert messages[2].thinking[0].signature == "sig=="
    assert messages[3].tool_call_id == "call_a"
    assert messages[5].is_error


def test_canonical_tool_call_ignores_key_order_and_id():
    a = ToolCall(id="x", name="f", arguments={"b": 1, "a": 2})
    b = ToolCall(id="y", name="f", arguments={"a": 2, "b": 1})
    assert a.canonical() == b.canonical() == '{"arguments":{"a":2,"b":1},"name":"f"}'


def test_distillation_sample_from_trajectory():
    sample = DistillationSample.from_trajectory(rich_trajectory())
    assert sample.task_id == "t-1"
    assert sample.messages[-1].content == "3.50 EUR, 12 units."
    assert DistillationSample.model_validate_json(sample.model_dump_json()) == sample


def test_no_final_answer_when_last_step_calls_tools():
    trajectory = rich_trajectory()
    trajectory.steps = trajectory.steps[:1]
    assert trajectory.final_answer is None
