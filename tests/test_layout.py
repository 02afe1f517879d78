"""The package's layout holds: the gateway's run-time side never reaches the offline side, no import cycles there."""

import ast
from pathlib import Path

import distillery

PACKAGE = Path(distillery.__file__).parent
OWNED = ("distillery.routing", "distillery.evaluation", "distillery.serve", "distillery.report")


def import_graph() -> dict[str, set[str]]:
    """Module -> the distillery modules it imports anywhere in its body (lazy imports included)."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("distillery", *path.relative_to(PACKAGE).with_suffix("").parts))
        files[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import submodule` imports the submodule where one exists
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                            for a in node.names}
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_run_time_routing_and_the_gateway_import_nothing_offline():
    graph = import_graph()
    for module in [m for m in graph if m.startswith(("distillery.routing", "distillery.serve"))]:
        offline = sorted(m for m in reachable(graph, module) if m.startswith("distillery.evaluation"))
        assert not offline, f"{module} reaches {offline}"


def test_no_import_cycle_through_routing_offline_serve_or_report():
    graph = import_graph()
    for module in [m for m in graph if m.startswith(OWNED)]:
        assert module not in reachable(graph, module), f"{module} imports itself through a cycle"


def test_routing_evaluation_and_serve_modules_stay_small():
    for folder in ("routing", "evaluation", "report", "serve"):
        for path in (PACKAGE / folder).glob("*.py"):
            assert len(path.read_text().splitlines()) < 500, f"{path.name} has 500 lines or more; split it"


# Core modules reach a world only through `distillery.registry`, which imports the built-in worlds'
# registering modules by name (`BUILTIN_PLUGINS`) on its first lookup that misses. The one exception
# is `distillery.demo`, kept as an alias of `distillery.world.demo` for old imports.
WORLD_IMPORT_ALLOWED = {"distillery.demo"}


def test_core_modules_do_not_import_the_world():
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("distillery.world") or module in WORLD_IMPORT_ALLOWED:
            continue
        world = sorted(t for t in targets if t == "distillery.world" or t.startswith("distillery.world."))
        assert not world, f"{module} imports {world}; ask distillery.registry instead"


def test_core_modules_test_no_world_uri():
    """No `startswith("world:...")` or `== "world"` in core code: what a world's models are is the registry's."""
    for path in PACKAGE.rglob("*.py"):
        if "world" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) or (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "startswith"):
                texts = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                assert not any(t.startswith("world") for t in texts), f"{path.name}:{node.lineno} tests for a world name"
