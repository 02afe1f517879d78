"""The offline world registers itself here, and only here (`distillery.registry` imports this module
on its first lookup that misses). Everything is named by import path, so registering imports nothing
heavy: no torch, no tokenizer, no database.

- models `world:teacher`, `world:student-s`, `world:student-xs` (the students untrained), simulated;
- the tokenizer `world` they share;
- the toolbox `world` (the whole shop, with its shop-assistant prompt), the default for commands;
- the task kind `world` (ids `world-...`), the default task source, with each split's sealed tools;
- the commands `distillery world ...` and `distillery demo`.
"""

from distillery import registry
from distillery.world import SYSTEM_PROMPT

registry.register_model_family(
    "world",
    "distillery.world.models:load_world_model",
    tokenizer="world",
    config="distillery.world.models:shipped_config",
    untrained=("student-s", "student-xs"),
    simulated=True,
)
registry.register_tokenizer("world", "distillery.world.models:load_world_tokenizer")
registry.register_toolbox("world", "distillery.world.tools:TOOLS", system=SYSTEM_PROMPT, default=True)
registry.register_task_kind(
    "world",
    id_prefix="world-",
    sample="distillery.world.tasks:generate_tasks",
    toolbox="distillery.world.tools:toolbox",
    next_step="evaluate it on the offline world: distillery world eval --model {model} --split validation",
    default=True,
)
registry.register_commands("distillery.world.cli")
registry.register_commands("distillery.world.demo_cli")
