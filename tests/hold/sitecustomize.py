"""Test seam for subprocesses: hold a job while a test looks at it running (see hold_jobs).

Loaded by Python at start-up when tests/hold is on PYTHONPATH (live_env puts it there) and
TEST_HOLD_JOBS=1. Listing a folder that holds a FIFO named HOLD_NAME waits until the test
opens that FIFO for writing (`release`). The engine never opens a FIFO itself (that is what
it must not do), so the wait sits here, at the folder listing every job starts with.
"""

import os
import stat

HOLD_NAME = ".stanza-tmp-held.partial"

if os.environ.get("TEST_HOLD_JOBS") == "1":
    _listdir = os.listdir

    def _held_listdir(path="."):
        fifo = os.path.join(os.fspath(path), HOLD_NAME)
        try:
            is_fifo = stat.S_ISFIFO(os.lstat(fifo).st_mode)
        except (OSError, TypeError):
            is_fifo = False
        if is_fifo:
            os.close(os.open(fifo, os.O_RDONLY))  # blocks until the test opens it to write
        return _listdir(path)

    os.listdir = _held_listdir
