"""How fast the local transformers provider (`distillery.models.hf.HFModel`) runs a world-teacher-sized model.

    python benchmarks/hf_provider.py [--repeats 5] [--tokens 40] [--batch 8]

Everything is measured side by side in one run (variants interleaved, medians of wall and CPU time), on one randomly initialised model built from the
world teacher's config (`world/assets/configs/teacher.json`: Llama, hidden 192, 4 layers, vocab
1536) and the world tokenizer, with the world tools in the prompt. Offline world; random weights,
so what is measured is the cost per token, not what the model says (min_new_tokens fixes every
call's length). Each figure is the median of `--repeats` runs. Compared:

1. transformers' own `model.generate` (greedy, KV cache) against `HFModel.generate` on the same
   prompt (same tokens come out), without and with logprobs (top 5): the provider's overhead.
2. `HFModel` with 1 intra-op thread (its default for small models) against torch's default.
3. A 4-step episode (4 model calls, the conversation growing by a tool call and result each time,
   `--tokens` new tokens per call): the time of a whole multi-step task.
4. `generate_many` on `--batch` conversations against the same conversations one call at a time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from distillery.models.hf import HFModel
from distillery.trajectory import Message, ToolCall


def world_parts():
    from distillery.world.models import load_world_tokenizer, world_config_path
    from distillery.world.tools import toolbox

    config = LlamaConfig.from_json_file(str(world_config_path("teacher")))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    tokenizer = load_world_tokenizer()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer, toolbox().specs


def measure(variants: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall seconds, CPU seconds of this process) per variant.

    Variants run round-robin, one repeat of each in turn, so a burst of load from other processes
    hits them all alike. CPU time counts only this process's own work, so it stays meaningful on a
    busy machine where wall time mostly measures waiting for a core.
    """
    for fn in variants.values():
        fn()  # warm-up
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in variants}


def episode(model: HFModel, tools, tokens: int) -> int:
    """Four model calls on a growing conversation; returns the tokens generated."""
    messages = [Message(role="user", content="How many units of the Trail Runner are in stock in Berlin and Oslo?")]
    generated = 0
    for step in range(4):
        turn = model.generate(messages, tools, max_tokens=tokens, min_new_tokens=tokens)[0]
        generated += turn.usage.output_tokens
        call = ToolCall(id=f"call_{step}", name="get_stock", arguments={"sku": "SKU-1042", "city": "Berlin"})
        messages += [
            Message(role="assistant", content="", tool_calls=[call]),
            Message(role="tool", content='{"sku": "SKU-1042", "city": "Berlin", "units": 17}', tool_call_id=call.id),
        ]
    return generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median reported)")
    parser.add_argument("--tokens", type=int, default=40, help="new tokens per model call")
    parser.add_argument("--batch", type=int, default=8, help="conversations per generate_many batch")
    args = parser.parse_args()

    model, tokenizer, tools = world_parts()
    params = sum(p.numel() for p in model.parameters())
    one_thread = HFModel("bench", model=model, tokenizer=tokenizer)  # default: 1 thread (small model)
    torch_default = HFModel("bench", model=model, tokenizer=tokenizer, num_threads=0)
    messages = [Message(role="user", content="What is the price of the Trail Runner in euros?")]
    prompt_ids = one_thread.encode(one_thread.render_prompt(messages, tools))
    print(f"model: world teacher config, {params / 1e6:.2f}M parameters, random weights; prompt {len(prompt_ids)} tokens")
    print(f"torch {torch.__version__}, default intra-op threads {torch.get_num_threads()}; offline world")

    # min_new_tokens: every call generates exactly --tokens tokens, so all variants do the same work.
    ids = torch.tensor([prompt_ids])

    def raw_generate():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.tokens,
                    min_new_tokens=args.tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                )
        finally:
            torch.set_num_threads(threads)

    def provider(hf: HFModel, **kw):
        return lambda: hf.generate(messages, tools, max_tokens=args.tokens, min_new_tokens=args.tokens, **kw)

    calls = measure(
        {
            "transformers model.generate (1 thread)": raw_generate,
            "HFModel.generate (1 thread)": provider(one_thread),
            "HFModel.generate logprobs top-5 (1 thread)": provider(one_thread, logprobs=True, top_logprobs=5),
            f"HFModel.generate (torch default, {torch.get_num_threads()} threads)": provider(torch_default),
        },
        args.repeats,
    )
    base_wall, base_cpu = next(iter(calls.values()))
    print(f"\n1-2. one call, {args.tokens} new tokens (median wall ms, ms/token, ratio; CPU ms, ratio)")
    for name, (wall, cpu) in calls.items():
        print(
            f"  {name:<48} wall {wall * 1000:7.1f} ms {wall / args.tokens * 1000:6.2f} ms/tok x{wall / base_wall:5.2f}"
            f" | cpu {cpu * 1000:7.1f} ms x{cpu / base_cpu:5.2f}"
        )

    tasks = measure(
        {
            "1 thread": lambda: episode(one_thread, tools, args.tokens),
            f"torch default ({torch.get_num_threads()} threads)": lambda: episode(torch_default, tools, args.tokens),
        },
        args.repeats,
    )
    print(f"\n3. a 4-step episode, {args.tokens} tokens per call ({4 * args.tokens} generated tokens)")
    for name, (wall, cpu) in tasks.items():
        print(f"  {name:<48} wall {wall * 1000:7.1f} ms per task | cpu {cpu * 1000:7.1f} ms")

    conversations = [
        [Message(role="user", content=f"How many units of SKU-{1000 + i} are in stock in city number {i}?")]
        for i in range(args.batch)
    ]
    batch = measure(
        {
            "one generate call each": lambda: [
                one_thread.generate(c, tools, max_tokens=args.tokens, min_new_tokens=args.tokens) for c in conversations
            ],
            "one generate_many call": lambda: one_thread.generate_many(
                conversations, tools, max_tokens=args.tokens, min_new_tokens=args.tokens
            ),
        },
        args.repeats,
    )
    (seq_wall, seq_cpu), (many_wall, many_cpu) = batch.values()
    print(f"\n4. {args.batch} conversations, {args.tokens} tokens each (1 thread)")
    for name, (wall, cpu) in batch.items():
        print(f"  {name:<48} wall {wall * 1000:7.1f} ms | cpu {cpu * 1000:7.1f} ms")
    print(f"  generate_many is x{seq_wall / many_wall:.2f} faster (wall), x{seq_cpu / many_cpu:.2f} (cpu)")

if __name__ == "__main__":
    main()
