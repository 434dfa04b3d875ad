"""Evaluation: benchmarks, generation, the judge client and scorers."""
