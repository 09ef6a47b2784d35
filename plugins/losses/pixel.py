"""Pixel-wise losses on ``B x C x H x W`` images in [0, 1]."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from deblurstack import Loss

# BT.601 luma of [0, 1] RGB scaled to [16, 235], as BasicSR/NAFNet compute it
_Y_WEIGHTS = (65.481, 128.553, 24.966)


class L1Loss(Loss):
    """Mean absolute error."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return (prediction - target).abs().mean()


class CharbonnierLoss(Loss):
    """``mean(sqrt((prediction - target)^2 + eps^2))``.

    Args:
        eps: smoothing constant; 1e-3 as in MPRNet and Restormer's derivatives.
    """

    # eps = 0 is L1, whose sqrt(0) has no gradient where prediction == target
    def __init__(self, eps: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return torch.sqrt((prediction - target) ** 2 + self.eps**2).mean()


class PSNRLoss(Loss):
    """``10 / ln 10 * mean_b(ln(MSE_b + 1e-8))``: minus the PSNR of each image, averaged (NAFNet).

    Args:
        to_y: compare the BT.601 luma channel (NAFNet's ``toY``) instead of RGB.
    """

    def __init__(self, to_y: bool = False) -> None:
        super().__init__()
        self.to_y = to_y
        self.register_buffer("y_weights", torch.tensor(_Y_WEIGHTS).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        if self.to_y:
            prediction = ((prediction * self.y_weights).sum(dim=1, keepdim=True) + 16.0) / 255.0
            target = ((target * self.y_weights).sum(dim=1, keepdim=True) + 16.0) / 255.0
        mse = ((prediction - target) ** 2).mean(dim=(1, 2, 3))
        return 10.0 / math.log(10.0) * torch.log(mse + 1e-8).mean()
