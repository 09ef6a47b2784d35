"""SAM-Deblur's CAT baseline: the gray label map appended to the image as a fourth channel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import Field
from torch import Tensor

from deblurstack import Prior, PriorOutput


class LabelChannel(Prior):
    """The label map times ``scale`` as one channel, as SAM-Deblur's ``NAFNet(mask=True)`` input.

    SAM-Deblur reads its gray label PNG as ``code / 255``; give the same integer codes as ``masks`` and keep the
    default scale to reproduce it (``MaskNAFNet-GoPro.pth`` loads into ``sam_cat`` + ``nafnet.w32``).

    Args:
        scale: factor applied to the integer labels.
    """

    out_channels = 1

    def __init__(self, scale: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 1 / 255) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, image: Tensor, aux: Mapping[str, Tensor]) -> PriorOutput:
        labels = aux["masks"]
        return PriorOutput(channels=labels.unsqueeze(1).to(image) * self.scale)
