"""Local Blur Perception (LBP): where is the image blurred?

BladeNet's MaskNet is a U-Net (the ``unet`` backbone's architecture, built through the registry) whose
head gives two logits per pixel, sharp and blurred. The stack appends them to the image the backbone sees:
raw, as the official code does, or as softmax probabilities. Training adds the official 2-class
cross-entropy (log-softmax and NLL, not a BCE) against the blur mask, weight 0.25 (``criterion.py``,
``train.py`` of komejisatori/BladeNet).

Official files: the ``maskNet.*`` keys of a ``WholeNet`` state dict are claimed by :meth:`claim_state_dict`;
the official code reads BGR images, so the first convolution's channels are reversed on load (the model
then takes RGB).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from deblurstack import Prior, PriorOutput
from deblurstack.compose import resolve_node

#: where an official BladeNet ``WholeNet`` file keeps the perception net
OFFICIAL_PREFIX = "maskNet."


class BlurPerception(Prior):
    """Predicts blurred-region logits ``B x 2 x H x W`` (channel 1: blurred) and appends them to the image.

    Args:
        width: channels of the U-Net's first level (official: 64).
        depth: down-sampling levels (official: 4).
        norm: ``batch`` (official) or ``none``.
        channels: ``logits`` appends the raw logits (official); ``probability`` their softmax.
        weight: weight of the cross-entropy against ``blur_mask`` in training (official: 0.25); 0 leaves it out.
        threshold: a ``blur_mask`` value above it counts as blurred.
    """

    out_channels = 2

    def __init__(
        self,
        width: Annotated[int, Field(ge=2, le=1024)] = 64,
        depth: Annotated[int, Field(ge=1, le=8)] = 4,
        norm: Literal["batch", "none"] = "batch",
        channels: Literal["logits", "probability"] = "logits",
        weight: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.25,
        threshold: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5,
    ) -> None:
        super().__init__()
        node = {"type": "unet", "out_channels": 2, "output": "linear", "width": width, "depth": depth, "norm": norm}
        self.network = resolve_node("backbone", node, "lbp.network").build()
        self.channels, self.weight, self.threshold = channels, weight, threshold

    def forward(self, image: Tensor, aux: Mapping[str, Tensor]) -> PriorOutput:
        logits = self.network(image[:, :3])
        appended = logits if self.channels == "logits" else logits.softmax(dim=1)
        return PriorOutput(channels=appended, extras={"logits": logits})

    def aux_losses(self, output: PriorOutput, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        if not self.weight:
            return {}
        return {"ce": self.weight * cross_entropy(output.extras["logits"], batch["blur_mask"], self.threshold)}

    def claim_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, str]:
        """The official file's ``maskNet.*`` keys, mapped to ours (converted by :meth:`convert_claimed`)."""
        return {key: f"network.{key.removeprefix(OFFICIAL_PREFIX)}" for key in state if key.startswith(OFFICIAL_PREFIX)}

    def convert_claimed(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The official MaskNet reads BGR images: reverse its first convolution's input channels."""
        first = "network.inc.double_conv.0.weight"
        return {**state, first: state[first].flip(1)} if first in state else state


def cross_entropy(logits: Tensor, mask: Tensor, threshold: float = 0.5) -> Tensor:
    """BladeNet's LBP loss: the mean 2-class cross-entropy of ``logits`` (``B x 2 x H x W``) against the mask."""
    target = (mask.reshape(logits.shape[0], *logits.shape[-2:]) > threshold).long()
    return F.cross_entropy(logits, target)


__all__ = ["BlurPerception", "cross_entropy"]
