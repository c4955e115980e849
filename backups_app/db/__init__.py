"""The database seam: one module per engine (SQLite today) with the same few functions."""
