"""What a ViT vision tower makes of one image: its patches and the tokens it adds to the LLM's sequence.

The one definition the model assembly, the planner (parameters, FLOPs, sequence lengths) and checkpoint
evaluation use (imports nothing of ours). LLaVA drops CLIP's CLS token (`feature_select: default`); `full`
(transformers' name) or `cls_patch` (LLaVA's) keep it.
"""

from __future__ import annotations

KEEPS_CLS = ("full", "cls_patch")


def patches(image_size: int, patch_size: int) -> int:
    """Patches of a square image: (image_size / patch_size)²; the tower itself also runs its CLS token."""
    return (int(image_size) // int(patch_size)) ** 2


def image_tokens(image_size: int, patch_size: int, feature_select: str = "default") -> int:
    """Tokens one image adds to the LLM's sequence: its patches, plus CLS when the feature selection keeps it."""
    return patches(image_size, patch_size) + (1 if feature_select in KEEPS_CLS else 0)
