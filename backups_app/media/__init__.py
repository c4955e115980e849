"""Site files: the uploaded files under STANZA_MEDIA_DIR, recorded with every backup.

Each distinct content is stored once under `BACKUPS_DIR/media/objects/HH/HASH` (its SHA-256);
a backup's `NAME.media` lists its files. Plain functions over paths: `lists` (the NAME.media
format), `store` (objects, the media lock, the clean-up, the page's figures), `record` (a
backup's scan), `put_back` (restore), `tarstream` (the download), `checks` (the drill) and
`offsite` (copies in the offsite store). `lists`, `store` and `record` import only conf (the
engine imports `record`); the others may import the engine and the offsite store.
"""
