"""The one error type every capability raises for its person: a message a hurried admin
understands (views, commands and jobs show it as it is). Imports nothing of the app."""


class BackupError(Exception):
    """Anything that stops a backup (or a restore, upload, copy...), in words."""
