"""The job registry, the one run recorder, the scheduler lock, and retention."""
