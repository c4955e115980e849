"""Site files: the uploaded files under STANZA_MEDIA_DIR, recorded with every backup.

Each distinct content is stored once under `BACKUPS_DIR/media/objects/HH/HASH` (its SHA-256);
a backup's `NAME.media` lists its files. Plain functions over paths: `lists` (the NAME.media
format), `store` (objects, the media lock, clean-up), `record` (a backup's scan), `put_back`
(restore), `tarstream` (the download) and `checks` (the drill). May import the engine and
conf; nothing but the engine's hooks, restore, jobs and views imports this package.
"""
