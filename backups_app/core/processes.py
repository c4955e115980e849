"""Which process made a run, and whether it still runs (from /proc: a reused pid is told apart)."""

import contextlib
import os
import socket
from pathlib import Path


def this_host():
    return socket.gethostname()[:255]


def _boot_id():
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_stat(pid):
    """(state, start time in clock ticks since boot) of a process from /proc; None if it is gone.

    Raises OSError where there is no /proc (not Linux).
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses; the rest follows the last ")".
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], fields[19]


def process_identity(pid=None):
    """What tells this process apart from a later one given the same pid: boot id and start time."""
    if not Path("/proc/self/stat").exists():
        return ""
    stat = _proc_stat(pid or os.getpid())
    boot = _boot_id()
    return f"{boot}/{stat[1]}" if stat and boot else ""


def process_is_alive(pid, identity=""):
    """Whether process `pid` on this machine is still the one recorded with `identity`."""
    if identity:
        boot, _, ticks = identity.partition("/")
        if boot != _boot_id():
            return False  # the machine restarted since: every process of that boot is gone
    try:
        stat = _proc_stat(pid)
    except OSError:  # no /proc: all we can ask is whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if stat is None or stat[0] in ("Z", "X"):  # gone, or a zombie waiting for its parent
        return False
    return not identity or stat[1] == ticks  # another start time: the pid was reused


def descendants(pid):
    """The processes `pid` started, and theirs (pg_restore --jobs forks its workers); [] where
    there is no /proc."""
    parents = {}
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    parent = int(stat.rsplit(")", 1)[1].split()[1])
                    parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found
