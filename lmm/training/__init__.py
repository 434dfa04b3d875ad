"""Training one stage with transformers' Trainer: arguments, DeepSpeed config, the trainer, throughput."""
