"""PSNR and the Mode Collapse Rate indicator, as BasicSR/NAFNet and SAM-Deblur evaluate them.

Both score 8-bit images: each image is clamped to [0, 1], multiplied by 255 and rounded (what
BasicSR's ``tensor2img`` does before ``calculate_psnr``), then compared in float64.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from deblurstack import Metric

# BasicSR's MATLAB-compatible BT.601 luma: Y = 16 + 65.481 R + 128.553 G + 24.966 B for RGB in [0, 1],
# i.e. Y in [16, 235] on the 8-bit scale
Y_WEIGHTS = (65.481, 128.553, 24.966)
PEAK = 255.0

#: pixels trimmed from each edge; an image too small for it is refused when it is scored
CropBorder = Annotated[int, Field(ge=0)]


def to_levels(image: Tensor) -> Tensor:
    """``B x C x H x W`` in [0, 1] -> 8-bit levels 0..255 as float64 (clamped, ``x * 255`` rounded half to even)."""
    return image.detach().clamp(0, 1).mul(255).round().double()


def luma(levels: Tensor) -> Tensor:
    """BT.601 Y (``B x 1 x H x W``, 16..235, not rounded) of 8-bit RGB levels, as BasicSR's ``to_y_channel``."""
    weights = levels.new_tensor(Y_WEIGHTS).view(1, 3, 1, 1)
    return 16.0 + (levels * weights).sum(dim=1, keepdim=True) / 255.0


def prepare(image: Tensor, crop_border: int = 0, test_y_channel: bool = False) -> Tensor:
    """8-bit levels of ``image``, ``crop_border`` pixels trimmed from each edge, optionally reduced to Y."""
    levels = to_levels(image)
    if crop_border:
        levels = levels[..., crop_border:-crop_border, crop_border:-crop_border]
    return luma(levels) if test_y_channel else levels


def check_pair(output: Tensor, target: Tensor, crop_border: int = 0) -> None:
    """Raise ValueError unless both are ``B x 3 x H x W`` of one shape, larger than the crop."""
    if output.shape != target.shape or output.dim() != 4 or output.shape[1] != 3:
        raise ValueError(
            f"expected two B x 3 x H x W images of one shape, got {tuple(output.shape)} and {tuple(target.shape)}"
        )
    if min(output.shape[-2:]) <= 2 * crop_border:
        raise ValueError(f"crop_border={crop_border} leaves nothing of a {tuple(output.shape[-2:])} image")


def psnr_levels(output: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR (peak 255) of two 8-bit-level batches; ``inf`` where they are identical."""
    mse = ((output - target) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(PEAK**2 / mse)  # mse == 0 gives inf, as BasicSR returns float('inf')


class PSNR(Metric):
    """PSNR of BasicSR/NAFNet's ``calculate_psnr`` on 8-bit images (peak 255, float64).

    Identical images (after rounding) give ``+inf``; average PSNR over a set is then ``inf`` too.
    Unlike BasicSR, the peak is always 255 (BasicSR switches to 1 when an image's maximum is <= 1).

    Args:
        crop_border: pixels trimmed from each edge before comparing (0 for deblurring).
        test_y_channel: compare the BT.601 Y channel (16..235 scale) instead of RGB.
    """

    def __init__(self, crop_border: CropBorder = 0, test_y_channel: bool = False) -> None:
        super().__init__()
        self.crop_border = crop_border
        self.test_y_channel = test_y_channel
        channel = "BT.601 Y (16-235)" if test_y_channel else "RGB"
        self.protocol = (
            f"PSNR on {channel}, outputs clamped to [0,1] and rounded to uint8, crop_border={crop_border}, "
            "float64, peak 255; identical images give inf"
        )

    def forward(self, output: Tensor, target: Tensor, **aux: Tensor) -> Tensor:
        check_pair(output, target, self.crop_border)
        return psnr_levels(
            prepare(output, self.crop_border, self.test_y_channel),
            prepare(target, self.crop_border, self.test_y_channel),
        )


class ModeCollapse(Metric):
    """SAM-Deblur's mode-collapse indicator: 1.0 where the output is ``threshold`` dB worse than the input.

    Per image, ``PSNR(input, target) - PSNR(output, target) > threshold`` (uint8 RGB PSNR, full image,
    as the ``psnr`` metric with its defaults). Its mean over a test set is the Mode Collapse Rate.
    An input identical to the target counts as a collapse unless the output is identical as well.

    Args:
        threshold: PSNR drop in dB beyond which an output counts as collapsed (3 dB in SAM-Deblur).
    """

    def __init__(self, threshold: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 3.0) -> None:
        super().__init__()
        self.threshold = threshold
        self.protocol = (
            f"MCR indicator: 1 if PSNR(input,target) - PSNR(output,target) > {threshold:g} dB else 0; "
            "PSNR on RGB, clamped to [0,1] and rounded to uint8, full image, peak 255; mean over a set = MCR"
        )

    def forward(self, output: Tensor, target: Tensor, **aux: Tensor) -> Tensor:
        blurry = aux["input"]
        check_pair(output, target)
        check_pair(blurry, target)
        reference = prepare(target)
        drop = psnr_levels(prepare(blurry), reference) - psnr_levels(prepare(output), reference)
        return (drop > self.threshold).double()  # inf - inf is nan: both perfect counts as no collapse
