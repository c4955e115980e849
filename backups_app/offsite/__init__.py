"""Offsite copies in S3-compatible storage.

- store.py: the settings, the one client of the process, every request to the store;
- multipart.py: the upload of a backup in parts, the abort of unfinished uploads;
- copies.py: the store's objects grouped into copies of backups (what is offsite);
- upload.py: the `copy-offsite` job; purge.py: offsite retention;
- fetch.py: copies back on this machine (download, fetch, stream), always checked;
- state.py: what the jobs recorded of the store, which pages and health read instead of it.

Imports flow store <- multipart, copies <- state <- upload, purge, fetch; the offsite drill
lives beside the local one (restore/offsite_drill.py). Nothing here imports jobs, health
(except health.problems), web or restore.
"""
