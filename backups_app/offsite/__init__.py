"""Offsite copies in S3-compatible storage: copy, verify, fetch, purge."""
