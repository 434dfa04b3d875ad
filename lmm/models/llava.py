"""The LLaVA model class: transformers' Llava with the paper's single linear projector as an option."""

from __future__ import annotations

from torch import nn
from transformers import LlavaForConditionalGeneration


class LinearProjector(nn.Module):
    """One linear map from CLIP features to the LLM's hidden size (the paper's projector).

    The layer is named `linear_1` like the first layer of transformers' two-layer projector, so
    stage-1 weights of both kinds load by the same key names.
    """

    def __init__(self, vision_hidden: int, text_hidden: int, bias: bool = True):
        super().__init__()
        self.linear_1 = nn.Linear(vision_hidden, text_hidden, bias=bias)

    def forward(self, image_features):
        return self.linear_1(image_features)


class LmmLlava(LlavaForConditionalGeneration):
    """LlavaForConditionalGeneration whose projector follows `config.projector_type`.

    `mlp2x_gelu` is transformers' own projector (such checkpoints also load with the stock class);
    `linear` swaps in `LinearProjector`.
    """

    def __init__(self, config):
        super().__init__(config)
        if getattr(config, "projector_type", "mlp2x_gelu") == "linear":
            self.model.multi_modal_projector = LinearProjector(
                config.vision_config.hidden_size, config.text_config.hidden_size, config.multimodal_projector_bias
            )
            self.post_init()


def projector_state_dict(model) -> dict:
    """The projector's weights with keys relative to the projector (`linear_1.weight`, ...)."""
    return {k: v.detach().cpu().clone() for k, v in projector_module(model).state_dict().items()}


def base_llava(model) -> LlavaForConditionalGeneration:
    """The LLaVA model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def projector_module(model) -> nn.Module:
    """The projector inside a (possibly PEFT-wrapped) LLaVA model."""
    return base_llava(model).model.multi_modal_projector
