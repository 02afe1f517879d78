"""Where a world plugs in: model families, tokenizers, toolboxes, task kinds and CLI commands.

A *world* is a simulated environment to distil in without a network: models of its own under a URI
scheme, the tokenizer they share, tools, a task source, and its commands. Core modules never import
a world; they ask these registries. A world registers itself in one module (the bundled offline
world in `distillery/world/plugin.py`), which this module imports on the first lookup that misses,
so `import distillery` stays fast. Another package plugs in its own world by calling these
functions, or, for the CLI, by naming its registering modules in `DISTILLERY_PLUGINS`
(comma-separated; imported after the built-in ones).

    from distillery import registry

    registry.register_model_family("sim", load="mypkg.sim:load_model", tokenizer="sim",
                                   config="mypkg.sim:config_path", untrained=("student",), simulated=True)
    registry.register_tokenizer("sim", "mypkg.sim:load_tokenizer")
    registry.register_toolbox("sim", "mypkg.sim:TOOLS", system="You are ...", default=True)
    registry.register_task_kind("sim", id_prefix="sim-", sample="mypkg.sim:generate_tasks",
                                toolbox="mypkg.sim:toolbox", default=True)
    registry.register_commands("mypkg.sim_cli")  # a module with register(app)

A reference is a callable or an import path `module:attr`, imported only when it is used.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillery.errors import ConfigError

Ref = str | Callable[..., Any]

# The worlds that ship with distillery: imported on the first lookup that misses.
BUILTIN_PLUGINS = ("distillery.world.plugin",)
PLUGINS_VARIABLE = "DISTILLERY_PLUGINS"


@dataclass(frozen=True)
class ModelFamily:
    """Local models under one URI scheme, `scheme:NAME`."""

    scheme: str
    load: Ref  # load(name, **options) -> ChatModel
    tokenizer: str | None = None  # the registered tokenizer every model of the family shares
    config: Ref | None = None  # config(name) -> a config.json (its parameter count prices the model), or None
    untrained: tuple[str, ...] = ()  # names built from random weights: they take `seed`, and train at 1e-3
    simulated: bool = False  # a simulated world's model: results it takes part in are labelled so


@dataclass(frozen=True)
class Toolbox:
    """Tools a command can name (`--tools NAME`), with the system prompt that goes with them."""

    name: str
    path: str  # import path `module:attr` of a ToolBox, a list of Tools, or a factory of either
    system: str | None = None


@dataclass(frozen=True)
class TaskKind:
    """Tasks a world generates, told apart by their ids."""

    name: str
    id_prefix: str
    sample: Ref | None = None  # sample(split, n, seed) -> list[Task]
    toolbox: Ref | None = None  # toolbox(split) -> ToolBox whose lookups see only that split
    simulated: bool = True
    next_step: str | None = None  # what to run after training on its tasks; `{model}` is the student

    def owns(self, task_id: str) -> bool:
        return str(task_id).startswith(self.id_prefix)


_MODEL_FAMILIES: dict[str, ModelFamily] = {}
_TOKENIZERS: dict[str, Ref] = {}
_TOOLBOXES: dict[str, Toolbox] = {}
_TASK_KINDS: dict[str, TaskKind] = {}
_COMMANDS: list[str] = []
_DEFAULTS: dict[str, str] = {}  # "toolbox" / "task_kind" -> the registered name used when none is given
_loaded = False


def load_plugins() -> None:
    """Import the registering modules, once: the built-in worlds, then those `DISTILLERY_PLUGINS` names."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in BUILTIN_PLUGINS:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a partial install without that world
            if not (exc.name and (name == exc.name or name.startswith(exc.name + "."))):
                raise
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{PLUGINS_VARIABLE}: cannot import {name}: {exc}") from None


def resolve(ref: Ref) -> Any:
    """A reference's object: a callable as is, `module:attr` imported."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _lookup(table: dict[str, Any], key: str) -> Any:
    if key not in table:
        load_plugins()
    return table.get(key)


def _all(table: dict[str, Any]) -> dict[str, Any]:
    load_plugins()
    return table


# -- model families ---------------------------------------------------------------------------------


def register_model_family(scheme: str, load: Ref, **fields: Any) -> None:
    """Models under `scheme:NAME`, loaded by `load(name, **options)`; fields as `ModelFamily`."""
    _MODEL_FAMILIES[scheme] = ModelFamily(scheme, load, **fields)


def model_family(uri: str) -> ModelFamily | None:
    """The registered family of a URI (`world:teacher`) or scheme (`world`); None if none."""
    scheme = str(uri).partition(":")[0]
    return _lookup(_MODEL_FAMILIES, scheme) if scheme else None


def model_schemes() -> list[str]:
    return sorted(_all(_MODEL_FAMILIES))


def _family_and_name(uri: Any) -> tuple[ModelFamily | None, str]:
    if not isinstance(uri, str) or ":" not in uri:
        return None, ""
    return model_family(uri), uri.partition(":")[2]


def is_untrained(uri: Any) -> bool:
    """True for a URI naming a model a family builds from random weights (e.g. a fresh student)."""
    family, name = _family_and_name(uri)
    return family is not None and name in family.untrained


def is_simulated(uri: Any) -> bool:
    """True for a model of a simulated world."""
    family, _ = _family_and_name(uri)
    return family is not None and family.simulated


def parameter_config(uri: str) -> Path | None:
    """The config.json a family's URI leads to (for its parameter count), or None."""
    family, name = _family_and_name(uri)
    if family is None or family.config is None:
        return None
    path = resolve(family.config)(name)
    return Path(path) if path else None


def tokenizer_for(uri: str) -> Any:
    """The tokenizer a family's models share, loaded; None when the URI's family has none."""
    family, _ = _family_and_name(uri)
    return load_tokenizer(family.tokenizer) if family is not None and family.tokenizer else None


# -- tokenizers -------------------------------------------------------------------------------------


def register_tokenizer(name: str, load: Ref) -> None:
    """A tokenizer by name: `load()` returns it."""
    _TOKENIZERS[name] = load


def load_tokenizer(name: str) -> Any:
    loader = _lookup(_TOKENIZERS, name)
    if loader is None:
        raise ConfigError(f"unknown tokenizer {name!r}; registered: {', '.join(sorted(_TOKENIZERS)) or 'none'}")
    return resolve(loader)()


# -- toolboxes --------------------------------------------------------------------------------------


def register_toolbox(name: str, path: str, *, system: str | None = None, default: bool = False) -> None:
    """Tools by name; `default` makes them what commands use when no --tools is given."""
    _TOOLBOXES[name] = Toolbox(name, path, system)
    if default:
        _DEFAULTS["toolbox"] = name


def toolbox(name_or_path: str) -> Toolbox | None:
    """The registered toolbox with this name or import path; None if none."""
    found = _lookup(_TOOLBOXES, name_or_path)
    return found or next((t for t in _TOOLBOXES.values() if t.path == name_or_path), None)


def default_toolbox() -> Toolbox:
    name = _all(_DEFAULTS).get("toolbox")
    if name is None:
        raise ConfigError("no default tools are registered; name tools with --tools module:attr")
    return _TOOLBOXES[name]


# -- task kinds -------------------------------------------------------------------------------------


def register_task_kind(name: str, *, id_prefix: str, default: bool = False, **fields: Any) -> None:
    """Tasks whose ids start with `id_prefix`; `default` makes it the source commands draw from
    when no --tasks file is given. Fields as `TaskKind`."""
    _TASK_KINDS[name] = TaskKind(name, id_prefix, **fields)
    if default:
        _DEFAULTS["task_kind"] = name


def task_kind(task_id: str) -> TaskKind | None:
    """The registered kind a task id belongs to; None for the user's own tasks."""
    return next((kind for kind in _all(_TASK_KINDS).values() if kind.owns(task_id)), None)


def is_simulated_task(task_id: str) -> bool:
    kind = task_kind(task_id)
    return kind is not None and kind.simulated


def default_task_kind() -> TaskKind:
    name = _all(_DEFAULTS).get("task_kind")
    if name is None:
        raise ConfigError("no task source is registered; give tasks with --tasks FILE")
    return _TASK_KINDS[name]


# -- commands ---------------------------------------------------------------------------------------


def register_commands(module: str) -> None:
    """A module whose `register(app)` adds a world's commands to the `distillery` CLI."""
    if module not in _COMMANDS:
        _COMMANDS.append(module)


def command_modules() -> list[str]:
    return list(_all(_COMMANDS))
