"""Launching runs: identity, run folders, done-markers, locks, ranks from SLURM."""
