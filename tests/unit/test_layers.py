"""No module imports upward: the package's layers, lowest first, as docs/architecture.md draws
them. A module may import its own layer and the ones below (lazy imports inside functions
count too; imports only for type checkers do not). A new module must be given a layer here."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"

LAYERS: list[set[str]] = [
    # declarations and leaf helpers: no knowledge of configs or targets
    {"orchestrator", "value", "errors", "labels", "targets", "sizes", "addresses", "vllm_options", "vllm_options_dump", "diagnose",
     "run_lock", "log_files", "secret_files", "exporters.kubernetes_settings", "ulimits", "backends",
     "backends.docker_context", "config", "exporters", "gateway", "gateway.routes", "gateway.files",
     "vllm_metrics", "restart_log", "sleep_api", "monitoring", "monitoring.files",
     "activator", "activator.state", "activator.budget", "activator.core"},
    # the target-neutral spec and the tables it is built with
    {"spec", "options", "argv", "start_order", "logs", "gateway.settings", "monitoring.settings", "monitoring.queries"},
    # reading the document; the Docker rendering of a spec; the option tables' cache; generated files
    {"config.loader", "config.schema", "container", "option_cache", "generate", "config.server_check",
     "config.settings_check", "monitoring.rules", "monitoring.dashboard"},
    # the contract's merge rules: document -> specs
    {"resolve"},
    # meaning of the resolved config
    {"config.validate", "gateway.checks", "config.on_demand_check", "monitoring.checks"},
    # a project opened and checked; the pure plan; GPU facts
    {"project", "plan", "gpus", "gpu_readers", "gateway.haproxy", "supervise"},
    # engine clients, renderers, exporters, status and waiting
    {"backends.engine", "backends.engine_errors", "backends.engine_socket", "backends.engine_sdk", "backends.engine_body",
     "compose", "exporters.kubernetes", "exporters.keda", "status", "waiter", "side_container", "gateway.service", "gateway.compose_service",
     "gateway.kubernetes", "top", "monitoring.prometheus", "monitoring.service", "monitoring.kubernetes",
     "monitoring.recordings", "activator.control", "activator.server", "activator.service"},
    # the backends
    {"backends.base", "backends.docker", "backends.docker_preflight", "backends.docker_apply", "backends.local",
     "backends.local_state", "backends.local_process", "backends.local_plan", "backends.local_stop"},
    # checks that need a backend
    {"gpu_check", "gateway.workflow", "monitoring.workflow", "activator.workflow", "activator.__main__"},
    # the workflows
    {"app", "watch"},
    # the command line
    {"cli", "__main__", "top_screen"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    name = ".".join(p for p in parts if p != "__init__")
    return name or "orchestrator"


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` blocks are for type checkers only
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; write `from orchestrator.... import ...`")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "orchestrator":
            package = node.module.removeprefix("orchestrator").lstrip(".")
            for alias in node.names:  # `from orchestrator.backends import docker` imports a module
                name = f"{package}.{alias.name}" if package else alias.name
                where = PACKAGE.joinpath(*name.split("."))
                found.add(name if where.with_suffix(".py").exists() or where.is_dir() else package or "orchestrator")
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("orchestrator.") for a in node.names if a.name.startswith("orchestrator."))
    return found


def layer_of(name: str) -> int:
    for number, layer in enumerate(LAYERS):
        if name in layer:
            return number
    raise AssertionError(f"orchestrator/{name.replace('.', '/')}: no layer in tests/unit/test_layers.py; give it one")


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))


def test_no_module_imports_upward():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for target in imports(path):
            if target != name and layer_of(target) > layer_of(name):
                upward.append(f"{name} imports {target}")
    assert upward == []


def test_the_check_sees_lazy_imports_and_skips_type_checking_ones(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\n"
                      "from orchestrator import options\n"
                      "if TYPE_CHECKING:\n    from orchestrator.cli import main\n"
                      "def f():\n    from orchestrator.backends.docker import DockerBackend\n"
                      "from orchestrator.backends import local\n")
    assert imports(module) == {"options", "backends.docker", "backends.local"}


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        graph[name] = {t for t in imports(path) if t != name and t in _modules()}
    return graph


def _modules() -> set[str]:
    return {module_name(p) for p in PACKAGE.rglob("*.py")}


def test_no_import_cycles_even_within_a_layer():
    """A module of a layer may import its neighbours, but never in a circle (container, options
    and spec once were one: options imported spec lazily, spec container for its types). A
    package importing its own modules does not count as a cycle through them."""
    graph = import_graph()
    cycles: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph.get(name, ())):
            if name.startswith(target + ".") or target in ("orchestrator", "backends", "config", "exporters"):
                continue  # a package's __init__ (empty here) is not an import of its modules
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
