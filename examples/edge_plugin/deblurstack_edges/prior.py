"""An edge map as an extra input channel."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from deblurstack import Prior, PriorOutput

_LUMA = (0.299, 0.587, 0.114)


class SobelEdges(Prior):
    """Sobel gradient magnitude of the BT.601 luma.

    Args:
        scale: factor on the magnitude; 0.25 maps a unit step edge to 1.
    """

    out_channels = 1

    def __init__(self, scale: float = 0.25) -> None:
        super().__init__()
        self.scale = scale
        horizontal = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("kernels", torch.stack([horizontal, horizontal.T]).unsqueeze(1), persistent=False)
        self.register_buffer("luma", torch.tensor(_LUMA).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor, aux: Mapping[str, Tensor]) -> PriorOutput:
        luma = (image[:, :3] * self.luma).sum(dim=1, keepdim=True)
        gradients = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), self.kernels)
        magnitude = torch.sqrt(gradients.pow(2).sum(dim=1, keepdim=True) + 1e-12)  # eps: finite gradient at 0
        return PriorOutput(channels=self.scale * magnitude)
