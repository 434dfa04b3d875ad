"""Conversation data: templates, tokenisation with label masking, datasets, synthetic data."""
