"""Putting a backup back: checks, the restore itself, uploads, and the nightly restore drill."""
