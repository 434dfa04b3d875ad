"""Benchmarks: throughput and padding of the training stack (not tests; they print ratios)."""
