"""lmm: Hydra-configured sweeps of two-stage LLaVA training, evaluation and analysis."""
