"""A failed run's error output as a sentence with what to do next, for the pages and messages.

The traceback stays in the run's record (and on its detail page); the pages lead with this.
"""

import re

from backups_app.models import last_line

# Exceptions whose message is already written for a person: shown without their class name.
OWN_ERRORS = {
    "BackupError",
    "DrillError",
    "RestoreError",
    "UploadError",
    "OperationRunning",
    "CommandError",
    "ConfigError",
}
EXCEPTION = re.compile(r"^([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)): (.*)$")

# Messages that say it all: pattern -> the sentence shown instead of the message.
SENTENCES = {
    r"^no backup to verify$": "No backup to verify yet: make one with Back up now.",
}
# What to do next, said after the message: pattern -> advice; the first pattern that matches.
ADVICE = {
    r"disk is full|no space left|disk full|quota exceeded": (
        "Free some space in the backups folder, then run it again."
    ),
    r"permission denied|not writable|cannot be read": (
        "Check who owns the folder and its permissions, then run it again."
    ),
    r"folder .* does not exist|is a file, not a folder": (
        "Create the folder (or fix STANZA_BACKUPS_DIR), then run it again."
    ),
    r"^restore drill of .* failed": (
        "Make a new backup with Back up now, then run verify-latest-backup again."
    ),
    r"^interrupted:": "The process was stopped during the run: run it again with Run now.",
    r"^skipped:": "Nothing to do unless the earlier run stays stuck.",
    r"database is locked|locked by another process": (
        "Something held the database too long: run it again in a moment."
    ),
}


def message_of(text):
    """The exception's own message, without its module path, or class for our own errors."""
    line = last_line(text or "")
    found = EXCEPTION.match(line)
    if found is None:
        return line
    name, message = found.groups()
    if name in OWN_ERRORS:
        return message
    return f"{message} ({name})" if message else name


def explain(text):
    """'...drill.DrillError: no backup to verify' -> 'No backup to verify yet: ...'."""
    message = message_of(text)
    if not message:
        return "It failed without an error message: see the run's details."
    sentence = first_match(SENTENCES, message)
    if sentence:
        return sentence
    advice = first_match(ADVICE, message)
    return f"{capital(message)}. {advice}" if advice else f"{capital(message)}."


def first_match(table, message):
    """The value of the first pattern of `table` found in `message` (any case), else None."""
    return next(
        (value for pattern, value in table.items() if re.search(pattern, message, re.I)), None
    )


def capital(text):
    text = text.rstrip(". ")
    return text[:1].upper() + text[1:]
