"""Site files: the uploaded files under STANZA_MEDIA_DIR, recorded with every backup.

Each distinct content is stored once under `BACKUPS_DIR/media/objects/HH/HASH` (its SHA-256);
a backup's `NAME.media` lists its files. Plain functions over paths: `lists` (the NAME.media
format), `store` (objects, the media lock, the clean-up, the page's figures), `record` (a
backup's scan), `put_back` (restore), `tarstream` (the download) and `checks` (the drill);
their offsite copies are the offsite package's (offsite/media.py). `lists`, `store` and
`record` import only conf and core (the engine imports `record`, the one import from below);
the others may import the engine.
"""
