"""The job registry, the one run recorder and the scheduler lock."""
