"""LLaVA models: assembly from an LLM and a CLIP tower, trainability per stage and method, checkpoints."""
