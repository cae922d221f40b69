"""The package's modules import downward only: no cycle, no import that climbs a layer.

Every import statement counts, also one inside a function. Imports under
``if TYPE_CHECKING:`` never run; they may not form part of a cycle either way, and may
climb only where :data:`TYPE_ONLY_UPWARD` says so (a return annotation naming a
class of a higher layer).
"""

from __future__ import annotations

import ast
from pathlib import Path

import asyncdb

PACKAGE_DIR = Path(asyncdb.__file__).parent

#: Lowest first (see DESIGN.md, "Layers"). A module imports only from its own layer or
#: below. A new module must be placed here.
LAYERS: list[set[str]] = [
    # errors / context / models, and leaves that import nothing of the package
    {
        "_errors",
        # the one classifier of driver errors (reads _driver_errors, _models)
        "_translate",
        "_context",
        "_models",
        "_health",
        "_cache_backend",
        # the Redis backend builds on the memory backend (its local tier) only
        "_cache_redis",
        "_histogram",
        "bench._progress",
        # what MariaDB/MySQL and DuckDB errors stand for (read by _errors)
        "_driver_errors",
        # DuckDB's async adapter: a worker thread per connection (imports only duckdb)
        "_aioduckdb",
        # SQLite's one-trip cursor over aiosqlite (imports only aiosqlite and SQLAlchemy)
        "_sqlite_cursor",
    },
    # settings / filters / pagination / model info
    {
        "_schema",
        "_audit_model",
        "_audit_chain",
        "_audit_batch",
        "_audit_guard",
        "_settings",
        "_session",
        # streamed results raising asyncdb errors while read (a toolkit session's)
        "_stream",
        "_retry",
        "_model_info",
        # detached instances from Core rows for plainly mapped models (reads _session)
        "_plain_load",
        "_filters",
        # eager loading (load=) and filters through relationships
        "_loading",
        "_relation_filters",
        "_expressions",
        "_aggregates",
        "_offset_page",
        "_pagination",
        "_values",
        # the one capability table: which backend supports which feature
        "_capabilities",
        # the CLI's shared options, exit codes and settings resolution (reads _settings)
        "_cli_common",
    },
    # engine / instrumentation / metrics / change log
    # and read routing (the manager's replica nodes and the policy that picks one)
    # and the per-backend engine policies and DuckDB's SQLAlchemy dialect
    {
        "_engine",
        "_sqlite_gate",
        "_instrument",
        "_metrics",
        "_changes",
        "_routing",
        "_probe",
        "_backend_mysql",
        "_backend_duckdb",
        "_dialect_duckdb",
    },
    # manager, with the default-manager registry and migrations
    {"_manager", "_registry", "_migrate_env", "_migrate_adopt", "_migrate"},
    # unit of work
    {"_completion", "_isolation", "_uow"},
    # audit / bulk / cache
    {
        "_audit",
        "_audit_create",
        "_audit_verify",
        "_audit_export",
        "_bulk_rows",
        "_bulk",
        "_copy",
        "_upsert",
        # bulk_upsert's unnest form on PostgreSQL (imports nothing of the package)
        "_upsert_unnest",
        # bulk_create on SQLite: batches sent to the driver as tuples (reads _copy)
        "_insert_tuples",
        "_cache",
    },
    # repository
    {
        "_repository_base",
        "_writes_by_filter",
        "_repository_counts",
        "_repository_bulk",
        "_repository",
    },
    # helpers and integrations
    {
        "__init__",
        "__main__",
        "_helpers",
        "_audit_history",
        "_cli_audit",
        "_cli_health",
        "_cli_metrics",
        "_cli_migrate",
        "cli",
        "demo",
        "fastapi",
        "prometheus",
        "redis_cache",
        "testing",
        "bench.__init__",
        "bench._base",
        "bench._cli",
        "bench._raw",
        "bench._relations",
        "bench._report",
        "bench._runner",
        "bench._schema",
        "bench._stacks",
        "bench._workloads",
        "bench.routing",
    },
]

#: (importer, imported) pairs allowed to climb, under ``if TYPE_CHECKING:`` only.
TYPE_ONLY_UPWARD = {
    # AsyncUnitOfWork.get_repository() -> Repository[M]; the class is registered at run
    # time by the repository module (register_repository_factory).
    ("_uow", "_repository"),
}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE_DIR).with_suffix("").parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(importer: str, node: ast.ImportFrom | ast.Import, known: set[str]) -> list[str]:
    """Package modules (names relative to the package) that ``node`` imports."""
    found: list[str] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == "asyncdb" or alias.name.startswith("asyncdb."):
                rel = alias.name.removeprefix("asyncdb").lstrip(".") or "__init__"
                found.append(rel)
        return [m for m in found if m in known]
    if node.level == 0:
        if node.module is None or not (
            node.module == "asyncdb" or node.module.startswith("asyncdb.")
        ):
            return []
        base = node.module.removeprefix("asyncdb").lstrip(".")
    else:
        parts = importer.split(".")
        package = parts[:-1]  # a package's __init__ is "pkg.__init__": its package is pkg
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    for alias in node.names:
        candidate = f"{base}.{alias.name}" if base else alias.name
        if candidate in known:
            found.append(candidate)  # a submodule
        elif f"{candidate}.__init__" in known:
            found.append(f"{candidate}.__init__")  # a subpackage
        elif base in known:
            found.append(base)  # a name of a module
        else:
            found.append(f"{base}.__init__" if base else "__init__")  # a name of a package
    return [m for m in found if m in known and m != importer]


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """``(imported module, type_checking_only)`` for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    result: list[tuple[str, bool]] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            result.extend((m, type_only) for m in _resolve(name, node, known))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return result


def _layer_of() -> dict[str, int]:
    return {module: index for index, layer in enumerate(LAYERS) for module in layer}


def _graph() -> dict[str, list[tuple[str, bool]]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_every_module_has_a_layer() -> None:
    missing = sorted(set(_modules()) - set(_layer_of()))
    assert not missing, f"place these modules in LAYERS: {missing}"
    stale = sorted(set(_layer_of()) - set(_modules()))
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_imports_go_downward_only() -> None:
    layer = _layer_of()
    upward = [
        (importer, imported, type_only)
        for importer, imports in _graph().items()
        for imported, type_only in imports
        if layer[imported] > layer[importer]
        and not (type_only and (importer, imported) in TYPE_ONLY_UPWARD)
    ]
    assert not upward, f"imports that climb a layer (importer, imported, type-only): {upward}"


def test_no_import_cycle() -> None:
    graph = {
        name: sorted({m for m, type_only in imports if not type_only})
        for name, imports in _graph().items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := walk(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)) is not None:
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")


def test_the_checker_sees_function_level_and_relative_imports() -> None:
    """A guard for the checker itself: it must see what the rules are about."""
    graph = dict(_graph())
    # _repository registers itself with the unit of work: a module-level import.
    assert ("_uow", False) in graph["_repository"]
    # bench._stacks imports its base one package level down, relatively.
    assert ("bench._base", False) in graph["bench._stacks"]
    # testing imports the registry's helpers inside a function.
    assert any(m == "_helpers" for m, _ in graph["testing"])
