"""Evaluation: the runner, one module per benchmark (lmm.eval.benchmarks), generation, the judge client, rescoring."""
