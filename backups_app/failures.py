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

# (pattern of the message, what to do next). A `None` advice means the sentence says it all.
ADVICE = (
    (
        re.compile(r"^no backup to verify$", re.I),
        "No backup to verify yet: make one with Back up now",
        None,
    ),
    (
        re.compile(r"disk is full|no space left|disk full|quota exceeded", re.I),
        None,
        "Free some space in the backups folder, then run it again.",
    ),
    (
        re.compile(r"permission denied|not writable|cannot be read", re.I),
        None,
        "Check who owns the folder and its permissions, then run it again.",
    ),
    (
        re.compile(r"folder .* does not exist|is a file, not a folder", re.I),
        None,
        "Create the folder (or fix STANZA_BACKUPS_DIR), then run it again.",
    ),
    (
        re.compile(r"^restore drill of .* failed", re.I),
        None,
        "Make a new backup with Back up now, then run verify-latest-backup again.",
    ),
    (
        re.compile(r"^interrupted:", re.I),
        None,
        "The process was stopped during the run: run it again with Run now.",
    ),
    (
        re.compile(r"^skipped:", re.I),
        None,
        "Nothing to do unless the earlier run stays stuck.",
    ),
    (
        re.compile(r"database is locked|locked by another process", re.I),
        None,
        "Something held the database too long: run it again in a moment.",
    ),
)


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
    """'backups_app.drill.DrillError: no backup to verify' -> 'No backup to verify yet: ...'."""
    message = message_of(text)
    if not message:
        return "It failed without an error message: see the run's details."
    for pattern, sentence, advice in ADVICE:
        if pattern.search(message):
            if sentence:
                return sentence + "."
            return f"{capital(message)}. {advice}"
    return f"{capital(message)}."


def capital(text):
    text = text.rstrip(". ")
    return text[:1].upper() + text[1:]
