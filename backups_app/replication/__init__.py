"""Continuous replication with Litestream, and restores to a point in time."""
