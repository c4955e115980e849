"""Offsite copies in S3-compatible storage.

- store.py: the settings, the one client of the process, every request to the store;
- multipart.py: the upload of a backup in parts, the abort of unfinished uploads;
- lock.py: S3 Object Lock on what is written, and what it keeps from the purge;
- copies.py: the store's objects grouped into copies of backups (what is offsite);
- upload.py: the `copy-offsite` job; purge.py: offsite retention (retention's rules);
- fetch.py: copies back on this machine (download, fetch, stream), always checked;
- state.py: what the jobs recorded of the store, which pages and health read instead of it;
- media.py: a copy's site files (their objects and NAME.media) in the store.

Imports flow lock <- store <- multipart, copies <- state <- upload, purge, fetch; from the rest
of the app only core, conf, engine, media (the local store of site files) and retention's
rules. The offsite drill lives beside the local one (restore/offsite_drill.py);
jobs, health and web import this package, never the other way round.
"""
