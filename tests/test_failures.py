"""Failures in plain words: the sentence the pages lead with instead of a traceback."""

import pytest

from backups_app.core.failures import explain, message_of, split_details

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
            "Permission denied: '/srv/b'. Check who owns the folder and its permissions, then "
            "run it again.",
        ),
        (
            "interrupted: the process was stopped during the run\n"
            + TRACEBACK
            + "KeyboardInterrupt",
            "Interrupted: the process was stopped during the run. Run it again with Run now.",
        ),
        (
            "interrupted: the process that ran it (pid 12 on web1) ended before the run finished",
            "Interrupted: the process that ran it (pid 12 on web1) ended before the run finished. "
            "The process was stopped during the run: run it again with Run now.",
        ),
        ("", "It failed without an error message: see the run's details."),
        (TRACEBACK + "RuntimeError: boom", "Boom."),
        (TRACEBACK + "MemoryError", "The process ran out of memory."),
        (
            TRACEBACK + "backups_app.offsite.store.OffsiteError: the offsite store at s3://b/p "
            'is unreachable: Could not connect to the endpoint URL: "http://127.0.0.1:9/b?list-type'
            '=2&prefix=site%2Fdb"',
            "The offsite store at s3://b/p is unreachable: Could not connect to the endpoint URL: "
            '"http://127.0.0.1:9/b". Check that the store is up and that this machine reaches it '
            "(AWS_ENDPOINT_URL), then run copy-offsite again.",
        ),
        (
            TRACEBACK + "backups_app.restore.restore.RestoreError: database.sqlite.20261206T101010Z"
            ".uploaded.bak failed the integrity check: *** in database main ***\n"
            "On tree page 2 cell 3: Rowid 5 out of order\n"
            "On tree page 2 cell 4: Rowid 6 out of order",
            "database.sqlite.20261206T101010Z.uploaded.bak is damaged: SQLite's integrity check "
            "found problems in it. Restore or upload another backup; this one cannot be used.",
        ),
    ],
)
def test_it_explains_an_error_in_a_sentence(error, sentence):
    assert explain(error) == sentence


def test_it_keeps_the_message_of_our_own_errors_without_their_module():
    error = TRACEBACK + "backups_app.restore.restore.RestoreError: x.bak is truncated"

    assert message_of(error) == "x.bak is truncated"


def test_it_puts_sqlites_check_output_behind_one_sentence():
    lines = "\n".join(f"On tree page 2 cell {n}: Rowid {n} out of order" for n in range(30))
    message = f"upload of x.bak refused: x.bak failed the integrity check: {lines}"

    headline, details = split_details(message)

    assert headline == (
        "upload of x.bak refused: x.bak is damaged: SQLite's integrity check found problems in it"
    )
    assert details.splitlines()[0] == "On tree page 2 cell 0: Rowid 0 out of order"
    assert details.splitlines()[-1] == "... and 10 more lines"
    assert "\n" not in headline


def test_it_shows_commands_in_plain_words_not_markdown():
    headline, _ = split_details("replication stopped (is `manage.py replicate` running?)")

    assert headline == "replication stopped (is manage.py replicate running?)"
