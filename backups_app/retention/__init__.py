"""Retention: which backups (and offsite copies) are kept, by which rule and until when
(policy.py, pure), what the backups folder holds for the size cap (usage.py: backups, sidecars
and site-file objects, read once per purge), and the purge that acts on it (purge.py)."""
