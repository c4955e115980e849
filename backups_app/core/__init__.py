"""Plumbing every capability shares: processes, signals, the operation lock, the audit trail."""
