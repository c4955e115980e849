"""What this project adds to reading its environment: its data folder and its secret-key file.

The parsers are the app's (`backups_app.parsers`), so every variable is checked one way and a bad
value is one line naming it.
"""

import os
import stat
import tempfile
from pathlib import Path

from backups_app.parsers import ConfigError, parse_dir

REPO_DIR = Path(__file__).resolve().parent.parent


def env_dir(name, default):
    """An absolute folder from the environment (else `default`), created (0700) if missing."""
    raw = os.environ.get(name, "").strip()
    path = parse_dir(name, raw) if raw else Path(default).resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name}={str(path)!r} is a file, not a folder")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{name}={str(path)!r} cannot be created: {err.strerror}") from None
    owner_only(path)
    return path


def owner_only(folder):
    """Take back what an older install (before umask 077) left readable by others.

    Only the folder's mode is read on every start; the walk runs once, when it is open to others.
    Symlinks are neither followed nor changed.
    """
    try:
        if not stat.S_IMODE(folder.lstat().st_mode) & 0o077:
            return
        for top, dirs, files in os.walk(folder):
            for name in [*dirs, *files]:
                tighten(Path(top) / name)
        tighten(folder)
    except OSError:
        pass  # a folder we cannot change is the user's to fix; whatever meets it says so


def tighten(path):
    mode = path.lstat().st_mode
    if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
        os.chmod(path, stat.S_IMODE(mode) & 0o700)


def local_secret_key(data_dir):
    """Keep one generated key in the data folder, so sessions survive restarts and workers agree."""
    from django.core.management.utils import get_random_secret_key

    key_file = Path(data_dir) / ".secret_key"
    if not key_file.exists():
        try:
            fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".secret_key.")
            with os.fdopen(fd, "w") as f:
                f.write(get_random_secret_key())
            try:
                os.link(tmp, key_file)  # never replaces a key another process just wrote
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        except OSError as err:
            raise ConfigError(
                f"DJANGO_SECRET_KEY is not set and {key_file} cannot be written: {err.strerror}"
            ) from None
    return key_file.read_text().strip()
