"""The app's modules import each other in one direction only, lazy imports included: a cycle
hidden inside a function still ties two modules together (issue 9)."""

import ast
import os
import subprocess
import sys
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


# The plan, lowest first: a module imports only from its own layer or the layers before it.
# (The part of media that records a backup's files sits below the engine, which calls it.)
LAYERS = [
    ["cron", "parsers", "conf", "signals", "core", "checks"],
    ["models", "audit", "db", "media.lists", "media.store", "media.record"],
    ["engine"],
    ["media", "retention"],
    ["offsite"],
    ["restore", "upload_gate"],
    ["replication"],
    ["jobs"],
    ["health"],
    ["templatetags", "admin_site", "admin", "web", "urls", "management", "apps"],
]


def layer_of(module):
    """The layer of `backups_app.X.Y`: its longest listed prefix (`media.store` before `media`)."""
    parts = module.split(".")[1:]
    for size in range(len(parts), 0, -1):
        prefix = ".".join(parts[:size])
        for rank, layer in enumerate(LAYERS):
            if prefix in layer:
                return rank
    raise AssertionError(f"{module} is in no layer of the plan")


def test_imports_go_down_the_layers_of_the_plan():
    paths = [p for p in APP.rglob("*.py") if "migrations" not in p.parts and p.parent != APP]
    paths += [p for p in APP.glob("*.py") if p.name != "__init__.py"]
    modules = {module_name(p): p for p in paths}
    upward = [
        f"{name} -> {imported}"
        for name, path in modules.items()
        for imported in imported_app_modules(path)
        # `from backups_app.media import record` names the package too: its __init__ is only a
        # docstring, so the module imported is what counts
        if imported in modules and modules[imported].name != "__init__.py"
        if layer_of(imported) > layer_of(name)
    ]

    assert upward == []


def test_an_sqlite_site_never_imports_psycopg(tmp_path):
    """psycopg costs every process 10 MB: only a PostgreSQL site imports it (db.ENGINES)."""
    code = (
        "import sys, django; django.setup()\n"
        "from django.core.management import call_command\n"
        "from backups_app.db import engine\n"
        "from backups_app.engine import backups\n"
        "from backups_app.web import views\n"
        "engine()\n"
        "print('psycopg' in sys.modules)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "stanza_site.settings"}
    env["STANZA_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=APP.parent, env=env, capture_output=True, text=True
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
