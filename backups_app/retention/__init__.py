"""Retention: which backups (and offsite copies) are kept, by which rule and until when
(policy.py, pure), and the purge that acts on it (purge.py)."""
