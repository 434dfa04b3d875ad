"""Hydra launcher plugin of lmm: per-job sized submitit jobs that skip finished runs."""
