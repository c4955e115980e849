"""A failed run's error output, or an error message, as one sentence with what to do next,
for the pages, messages and alerts.

The whole error output stays in the run's record (and, folded, on its detail page); what a
person reads first is `explain()` (a sentence with advice) or `split_details()` (a sentence,
and any tool output behind it for a "details" disclosure). Neither shows an exception's class
name, a module path, a URL's query string or markdown's `code` quotes.
"""

import re

# The line that names an exception: "pkg.module.SomeError: message", or a bare class name.
EXCEPTION = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning))(?:: (.*))?$"
)
# A URL's query string (a store's `?list-type=2&prefix=...`): what a person reads stops at the path.
QUERY = re.compile(r"(\bhttps?://[^\s?'\"]+)\?[^\s'\"]*")
ERRNO = re.compile(r"\[Errno \d+\] ")
# Markdown's code quotes (`manage.py replicate`), which plain text shows as they are.
CODE_QUOTES = re.compile(r"`([^`\n]*)`")
# Exceptions that carry no message of their own: what happened, in words.
BARE = {
    "KeyboardInterrupt": "interrupted: the process was stopped during the run",
    "SystemExit": "interrupted: the process exited during the run",
    "MemoryError": "the process ran out of memory",
}
UNKNOWN = "It failed without an error message: see the run's details."

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
    r"upload .*is damaged": (
        "Upload another copy of the backup (this one was damaged on its way or where it was "
        "kept), or restore one from the list."
    ),
    r"is damaged": "Restore or upload another backup; this one cannot be used.",
    r"stopped during the run": "Run it again with Run now.",
    r"nosuchbucket|bucket does not exist": (
        "Create the bucket (the app never creates one) or fix STANZA_OFFSITE_URL, then run "
        "copy-offsite again."
    ),
    r"accessdenied|invalidaccesskeyid|signaturedoesnotmatch|credentials": (
        "Check the store's credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), then run "
        "copy-offsite again."
    ),
    r"offsite store .*(unreachable|did not answer|timed out)|could not connect to the endpoint": (
        "Check that the store is up and that this machine reaches it (AWS_ENDPOINT_URL), then "
        "run copy-offsite again."
    ),
    r"^interrupted:": ("The process was stopped during the run: run it again with Run now."),
    r"^skipped:": "Nothing to do unless the earlier run stays stuck.",
    r"database is locked|locked by another process": (
        "Something held the database too long: run it again in a moment."
    ),
}
# A headline and the tool output behind it: (pattern, how the headline reads).
DETAILED = (
    (
        re.compile(
            r"^(?P<head>.*?)(?P<name>\S+) failed the (?:integrity|quick) check: (?P<details>.*)$",
            re.S,
        ),
        r"\g<head>\g<name> is damaged: SQLite's integrity check found problems in it",
    ),
    (
        re.compile(
            r"^(?P<head>.*?)(?P<name>\S+) is not a sound SQLite database: (?P<details>.*)$", re.S
        ),
        r"\g<head>\g<name> is damaged: SQLite cannot read it",
    ),
)
MAX_DETAIL_LINES = 20


def message_of(text):
    """The message of the last exception in `text` (an error output), without its class name,
    module path, errno or query strings; a message of several lines keeps them all."""
    lines = [line.rstrip() for line in (text or "").strip().splitlines() if line.strip()]
    for index in range(len(lines) - 1, -1, -1):
        found = EXCEPTION.match(lines[index])
        if found:
            name, message = found.groups()
            message = "\n".join([message or "", *lines[index + 1 :]]).strip()
            return plain(message) if message else BARE.get(name, UNKNOWN)
    return plain(lines[-1].strip()) if lines else ""


def plain(message):
    """A message as a person reads it: no errno, no URL query strings, no markdown quotes."""
    return CODE_QUOTES.sub(r"\1", QUERY.sub(r"\1", ERRNO.sub("", message)))


def split_details(message):
    """(one sentence, the tool output behind it or "") for a message such as an upload's refusal.

    SQLite's integrity_check output (dozens of "On tree page N cell M" lines) becomes "NAME is
    damaged: SQLite's integrity check found problems in it", with the lines as details.
    """
    message = plain((message or "").strip())
    for pattern, headline in DETAILED:
        found = pattern.match(message)
        if found:
            return found.expand(headline), clip(found.group("details"))
    first, _, rest = message.partition("\n")
    return first, clip(rest)


def clip(details):
    lines = [line for line in details.strip().splitlines() if line.strip()]
    if len(lines) > MAX_DETAIL_LINES:
        lines = [*lines[:MAX_DETAIL_LINES], f"... and {len(lines) - MAX_DETAIL_LINES} more lines"]
    return "\n".join(lines)


def sentence(message):
    """A message (not an error output) as one sentence with what to do next."""
    headline, _ = split_details(message)
    if not headline:
        return UNKNOWN
    known = first_match(SENTENCES, headline)
    if known:
        return known
    advice = first_match(ADVICE, headline)
    return f"{capital(headline)}. {advice}" if advice else f"{capital(headline)}."


def explain(text):
    """'...drill.DrillError: no backup to verify' -> 'No backup to verify yet: ...'."""
    return sentence(message_of(text))


def first_match(table, message):
    """The value of the first pattern of `table` found in `message` (any case), else None."""
    return next(
        (value for pattern, value in table.items() if re.search(pattern, message, re.I)), None
    )


def capital(text):
    """The sentence with a capital letter, unless it starts with a name ("database.sqlite...")."""
    text = text.rstrip(". ")
    if re.match(r"\S*\.\S", text):
        return text
    return text[:1].upper() + text[1:]
