"""Failures in plain words: the sentence the pages lead with instead of a traceback."""

import pytest

from backups_app.health.failures import explain, message_of

TRACEBACK = 'Traceback (most recent call last):\n  File "backups_app/jobs.py", line 60, in x\n'


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        (
            TRACEBACK + "backups_app.restore.drill.DrillError: no backup to verify\n",
            "No backup to verify yet: make one with Back up now.",
        ),
        (
            TRACEBACK
            + "backups_app.engine.backups.BackupError: disk full while writing to /srv/b\n",
            "Disk full while writing to /srv/b. Free some space in the backups folder, "
            "then run it again.",
        ),
        (
            TRACEBACK + "PermissionError: [Errno 13] Permission denied: '/srv/b'\n",
            "[Errno 13] Permission denied: '/srv/b' (PermissionError). Check who owns the folder "
            "and its permissions, then run it again.",
        ),
        (
            "interrupted: the process was stopped during the run\n"
            + TRACEBACK
            + "KeyboardInterrupt",
            "KeyboardInterrupt.",
        ),
        (
            "interrupted: the process that ran it (pid 12 on web1) ended before the run finished",
            "Interrupted: the process that ran it (pid 12 on web1) ended before the run finished. "
            "The process was stopped during the run: run it again with Run now.",
        ),
        ("", "It failed without an error message: see the run's details."),
        (TRACEBACK + "RuntimeError: boom", "Boom (RuntimeError)."),
    ],
)
def test_it_explains_an_error_in_a_sentence(error, sentence):
    assert explain(error) == sentence


def test_it_keeps_the_message_of_our_own_errors_without_their_module():
    error = TRACEBACK + "backups_app.restore.restore.RestoreError: x.bak is truncated"

    assert message_of(error) == "x.bak is truncated"
