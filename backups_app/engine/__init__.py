"""Making backups: consistent copies of the live database, verified, named atomically."""
