"""What the benchmarks share: a child process timed with its peak RSS, django-dbbackup's venv, and
this project's Django set up in a data folder of its own.

Imported by the scripts in this folder (run as `python bench/NAME.py`, so this folder is on
sys.path): `from _common import run_child`.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON = sys.executable


def run_child(args, *, env=None, stdout=None):
    """Run a command; return (seconds, peak RSS in MB, stderr) from wait4's rusage.

    `env` is added to this process's environment. A failure stops the bench, quoting the end
    of the command's error output.
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        args, env={**os.environ, **(env or {})}, stdout=stdout, stderr=subprocess.PIPE
    )
    stderr = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{args[:3]} failed ({proc.returncode}): {stderr[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024, stderr


def dbbackup_python(workdir, requirements, settings_module, settings_text):
    """The python of a throwaway venv holding django-dbbackup (made once, in `workdir`), with
    `settings_module`.py (`settings_text`) written beside it for DJANGO_SETTINGS_MODULE."""
    venv = workdir / "dbbackup-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"installing django-dbbackup into {venv} (once)...", file=sys.stderr, flush=True)
        subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
    (workdir / f"{settings_module}.py").write_text(settings_text)
    return python


def django_in_new_data_dir(prefix, **environ):
    """Set up this project's Django on a new temporary STANZA_DATA_DIR (and `environ`); return it.

    For benches that time the app in this process: call before importing the app's modules.
    """
    data = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["STANZA_DATA_DIR"] = str(data)
    os.environ.update(environ)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stanza_site.settings")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()
    return data
