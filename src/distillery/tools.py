"""Tools an agent can call: schemas from type hints, validated arguments, and calls that never crash the run.

    @tool
    def get_price(sku: str, currency: str = "USD") -> float:
        '''Look up a product's price.

        Args:
            sku: The product's stock-keeping unit, e.g. "SKU-1042".
            currency: ISO currency code.
        '''

`get_price.spec` is the JSON-Schema `ToolSpec` a model sees. `get_price.run(arguments)` validates the
arguments against it, runs the function with a timeout, and always returns a `ToolResult`: an
exception, a timeout or invalid arguments become an error result (`is_error=True`) that the agent
reads and can recover from.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import inspect
import json
import os
import re
import sys
import time
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import jsonschema

from distillery.errors import ConfigError, read_json_file
from distillery.trajectory import ToolCall, ToolResult, ToolSpec

DEFAULT_TIMEOUT_S = 30.0


def default_tools() -> str:
    """Import path of the tools a command uses when none are named: the registered default toolbox
    (`distillery.registry`; the offline world's shop unless another world claims the default)."""
    from distillery import registry

    return registry.default_toolbox().path


def default_system(system: str | None, tools_path: str | None) -> str | None:
    """The system prompt a command runs tasks with: `system` when given; with the default tools (or
    other registered tools), the prompt registered with them; otherwise none. A task's own
    `system` wins over both."""
    from distillery import registry

    if system is not None:
        return system
    entry = registry.default_toolbox() if tools_path is None else registry.toolbox(tools_path)
    return entry.system if entry else None

# Tool functions run on a shared pool so a timeout can return without waiting for the function.
# A timed-out function keeps its thread until it returns: Python cannot kill a thread.
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="distillery-tool")

_PY_TO_JSON = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}


def _schema_for(annotation: Any) -> dict[str, Any]:
    """JSON Schema for one type hint. Unknown types give `{}` (anything goes) rather than failing."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        values = list(args)
        schema: dict[str, Any] = {"enum": values}
        kinds = {type(v) for v in values}
        if len(kinds) == 1 and next(iter(kinds)) in _PY_TO_JSON:
            schema["type"] = _PY_TO_JSON[next(iter(kinds))]
        return schema
    if origin in (typing.Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        if len(non_null) == 1:
            inner = _schema_for(non_null[0])
            if type(None) in args and "type" in inner:
                inner = {**inner, "type": [inner["type"], "null"]}
            return inner
        return {"anyOf": [_schema_for(a) for a in args]}
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple):
        schema = {"type": "array"}
        if args:
            schema["items"] = _schema_for(args[0])
        return schema
    if origin is dict or annotation is dict:
        return {"type": "object"}
    if annotation in _PY_TO_JSON:
        return {"type": _PY_TO_JSON[annotation]}
    return {}


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and per-argument descriptions."""
    if not doc:
        return "", {}
    doc = inspect.cleandoc(doc)
    parts = re.split(r"^\s*(?:Args|Arguments|Parameters):\s*$", doc, maxsplit=1, flags=re.MULTILINE)
    description = parts[0].strip()
    arg_docs: dict[str, str] = {}
    if len(parts) == 2:
        current = None
        for line in parts[1].splitlines():
            if re.match(r"^\s*(Returns|Raises|Yields|Examples?):", line):
                break
            match = re.match(r"^\s{0,8}(\w+)\s*(?:\([^)]*\))?:\s*(.*)$", line)
            if match:
                current = match.group(1)
                arg_docs[current] = match.group(2).strip()
            elif current and line.strip():
                arg_docs[current] += " " + line.strip()
    return description, arg_docs


def schema_from_function(fn: Callable[..., Any], name: str | None = None) -> ToolSpec:
    """Build a `ToolSpec` from a function's signature, type hints and Google-style docstring."""
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    description, arg_docs = _parse_docstring(fn.__doc__ or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        prop = _schema_for(hints.get(param.name, param.annotation))
        if param.name in arg_docs:
            prop["description"] = arg_docs[param.name]
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
        elif param.default is not None and isinstance(param.default, (str, int, float, bool)):
            prop["default"] = param.default
        properties[param.name] = prop
    parameters: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        parameters["required"] = required
    return ToolSpec(name=name or fn.__name__, description=description, parameters=parameters)


def check_schema(spec: ToolSpec, *, source: str = "") -> None:
    """Raise a one-line `ConfigError` when a tool's parameters are not a valid JSON Schema."""
    where = f"{source}: " if source else ""
    try:
        jsonschema.Draft202012Validator.check_schema(spec.parameters)
    except jsonschema.SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ConfigError(
            f"{where}tool {spec.name!r}: parameters are not valid JSON Schema at {path}: {exc.message}"
        ) from None
    if spec.parameters.get("type") != "object":
        raise ConfigError(f"{where}tool {spec.name!r}: parameters must be a JSON Schema of type 'object'")


class Tool:
    """A callable tool: its `spec` (what the model sees) and `fn` (what runs)."""

    def __init__(self, fn: Callable[..., Any], spec: ToolSpec, *, timeout_s: float = DEFAULT_TIMEOUT_S):
        check_schema(spec)
        self.fn = fn
        self.spec = spec
        self.timeout_s = timeout_s
        self._validator = jsonschema.Draft202012Validator(spec.parameters)
        self.__doc__ = fn.__doc__
        self.__name__ = spec.name

    @property
    def name(self) -> str:
        return self.spec.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly, as ordinary Python."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.spec.name!r})"

    def validation_error(self, arguments: Any) -> str | None:
        """The first schema violation in `arguments`, as a readable line, or None when valid."""
        if not isinstance(arguments, dict):
            return f"arguments must be a JSON object, got {type(arguments).__name__}"
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(arguments))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"{where}: {error.message}" if where else error.message

    def run(self, call: ToolCall, *, timeout_s: float | None = None, inline: bool = False) -> ToolResult:
        """Validate and run one call. Never raises: every failure is an error result.

        `inline=True` runs the function in the calling thread with no timeout: for trusted, fast
        functions (the offline world's expert runs millions of lookups) where the pool's hand-off
        would cost more than the call.
        """
        start = time.perf_counter()

        def result(content: str, is_error: bool = False) -> ToolResult:
            return ToolResult(
                tool_call_id=call.id,
                name=call.name,
                content=content,
                is_error=is_error,
                latency_s=time.perf_counter() - start,
            )

        if call.parse_error is not None:
            return result(f"Error: arguments are not valid JSON ({call.parse_error})", True)
        problem = self.validation_error(call.arguments)
        if problem is not None:
            return result(f"Error: invalid arguments for {self.name}: {problem}", True)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            if inline:
                value = self.fn(**call.arguments)
            else:
                value = _POOL.submit(self.fn, **call.arguments).result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return result(f"Error: {self.name} timed out after {timeout:g}s", True)
        except Exception as exc:  # a tool's failure is information for the agent, not a crash
            return result(f"Error: {type(exc).__name__}: {exc}", True)
        return result(format_tool_output(value))


def format_tool_output(value: Any) -> str:
    """Tool return values become text the model reads: strings as-is, everything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def tool(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Any:
    """Decorator that turns a typed, documented function into a `Tool`. Usable bare or with options."""

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(f, schema_from_function(f, name=name), timeout_s=timeout_s)

    return wrap(fn) if fn is not None else wrap


class ToolBox:
    """The tools offered to an agent, by name. Unknown tool names become error results."""

    def __init__(self, tools: Iterable[Tool] = ()):
        self._tools: dict[str, Tool] = {}
        for t in tools:
            if t.name in self._tools:
                raise ConfigError(f"two tools are named {t.name!r}")
            self._tools[t.name] = t

    def __iter__(self):
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    @property
    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in self._tools.values()]

    def run(self, call: ToolCall, *, timeout_s: float | None = None, inline: bool = False) -> ToolResult:
        found = self._tools.get(call.name)
        if found is None:
            known = ", ".join(sorted(self._tools)) or "none"
            return ToolResult(
                tool_call_id=call.id,
                name=call.name,
                content=f"Error: unknown tool {call.name!r}; available tools: {known}",
                is_error=True,
            )
        return found.run(call, timeout_s=timeout_s, inline=inline)


def load_tool_specs(path: str | Path) -> list[ToolSpec]:
    """Load tool schemas from a JSON file: a list of `{name, description, parameters}` objects.

    OpenAI's `{"type": "function", "function": {...}}` and Anthropic's `input_schema` spellings are
    accepted too. Each schema is checked; errors name the file and the tool's index.
    """
    path = Path(path)
    raw = read_json_file(path, what="tool schema file")
    if isinstance(raw, dict):
        raw = [raw]
    specs = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: tool #{index} must be a JSON object")
        if item.get("type") == "function" and "function" in item:
            item = item["function"]
        if "input_schema" in item and "parameters" not in item:
            item = {**item, "parameters": item["input_schema"]}
        if "name" not in item:
            raise ConfigError(f"{path}: tool #{index} has no 'name'")
        spec = ToolSpec(
            name=item["name"],
            description=item.get("description", ""),
            parameters=item.get("parameters", {"type": "object", "properties": {}}),
        )
        check_schema(spec, source=f"{path} tool #{index}")
        specs.append(spec)
    return specs


def _import_user_module(module_name: str, where: str) -> types.ModuleType:
    """Import a module the user named, finding it in the current directory as `python -m` does.

    The `distillery` script's sys.path starts at its own bin directory, not the directory it runs
    in, so `--tools my_tools:TOOLS` beside your files would not import; the current directory is
    put first on sys.path (and kept there: the module may import its siblings later, and
    `--processes` workers resolve the same path). Any failure is one line naming the module.
    """
    cwd = os.getcwd()
    if not any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path):
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # a module written since the last import in this process
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(
                f"{where}: cannot import {module_name}: no module named {exc.name!r} "
                f"(looked in the current directory {cwd} and the installed packages)"
            ) from None
        raise ConfigError(f"{where}: cannot import {module_name}: {exc}") from None
    except Exception as exc:  # the module itself is broken: a syntax error, a failing import-time call
        raise ConfigError(f"{where}: cannot import {module_name}: {type(exc).__name__}: {exc}") from None


def load_tools(import_path: str, *, option: str = "tools") -> ToolBox:
    """Tools from an import path `module:attr`: a ToolBox, a list of Tools, a Tool, or a factory of any of them.

    This is how the CLI names tools (`--tools mypkg.tools:TOOLS`); a bare name is a toolbox a world
    registered (`--tools world`), and `default_tools()` the registered default.
    """
    if ":" not in import_path:
        from distillery import registry

        entry = registry.toolbox(import_path) if import_path else None
        import_path = entry.path if entry else import_path
    module_name, sep, attr = import_path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{option} {import_path!r}: expected module:attribute, e.g. mypkg.tools:TOOLS")
    module = _import_user_module(module_name, f"{option} {import_path!r}")
    try:
        value = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{option} {import_path!r}: module {module_name} has no attribute {attr!r}") from None
    if callable(value) and not isinstance(value, (Tool, ToolBox)):
        value = value()
    if isinstance(value, Tool):
        value = [value]
    if isinstance(value, ToolBox):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(t, Tool) for t in value):
        return ToolBox(value)
    raise ConfigError(f"{option} {import_path!r}: expected a ToolBox or a list of Tool, got {type(value).__name__}")
