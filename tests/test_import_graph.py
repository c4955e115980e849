"""The app's modules import each other in one direction only, lazy imports included: a cycle
hidden inside a function still ties two modules together (issue 9)."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "backups_app"


def imported_app_modules(path):
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        module = getattr(node, "module", None) or ""
        if isinstance(node, ast.ImportFrom) and module.split(".")[0] == "backups_app":
            # `from backups_app.engine import backups` imports the module engine.backups
            found |= {f"{module}.{alias.name}" for alias in node.names}
            found.add(module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("backups_app.")}
    return found


def module_name(path):
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_it_has_no_import_cycle_even_through_lazy_imports():
    paths = [p for p in APP.rglob("*.py") if "migrations" not in p.parts]
    modules = {module_name(p): p for p in paths}
    graph = {
        name: {m for m in imported_app_modules(path) if m in modules and m != name}
        for name, path in modules.items()
    }

    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from None

    assert (
        "backups_app.jobs.jobs" in graph
        and "backups_app.offsite.upload" in graph["backups_app.jobs.jobs"]
    )
    # Health's problem sources are imported, not named by strings the graph cannot see.
    health = graph["backups_app.health.health"]
    assert {"backups_app.offsite.state", "backups_app.replication.replication"} <= health
