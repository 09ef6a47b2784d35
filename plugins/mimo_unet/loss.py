"""MIMO-UNet's training loss (official ``train.py``): multi-scale L1 content + 0.1 x multi-scale frequency L1."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from deblurstack import Loss


def _spectrum(x: Tensor) -> Tensor:
    """Real and imaginary parts of the two-sided 2-D FFT (the official ``torch.rfft(x, 2, onesided=False)``)."""
    return torch.view_as_real(torch.fft.fft2(x))


class MIMOUNetLoss(Loss):
    """``sum_k L1(out_k, S_k) + fft_weight * sum_k L1(FFT(out_k), FFT(S_k))``, mean reductions.

    The outputs are coarse to fine; output ``k`` of ``n`` is compared with ``S_k``, the target
    downsampled by ``2 ** (k + 1 - n)`` with bilinear interpolation (x0.25, x0.5, x1 for three
    outputs), as the official code does, while MIMO-UNet's input pyramid is nearest. A single
    tensor, or a list of one, is compared with the target alone.

    Args:
        fft_weight: weight of the frequency term (0.1 in the paper and the official code).
    """

    def __init__(self, fft_weight: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.1) -> None:
        super().__init__()
        self.fft_weight = fft_weight

    def forward(self, prediction: Tensor | list[Tensor], target: Tensor) -> Tensor:
        outputs = [prediction] if isinstance(prediction, Tensor) else list(prediction)
        content, frequency = target.new_zeros(()), target.new_zeros(())
        for k, out in enumerate(outputs):
            factor = 0.5 ** (len(outputs) - 1 - k)
            label = target if factor == 1 else F.interpolate(target, scale_factor=factor, mode="bilinear")
            if out.shape != label.shape:
                raise ValueError(
                    f"output {k} of {len(outputs)} is {tuple(out.shape)}, but the target x{factor:g} "
                    f"is {tuple(label.shape)} (outputs must halve in size from the last, coarse to fine)"
                )
            content = content + F.l1_loss(out, label)
            frequency = frequency + F.l1_loss(_spectrum(out), _spectrum(label))
        return content + self.fft_weight * frequency
