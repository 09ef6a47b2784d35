"""Local-region PSNR and SSIM for local deblurring: inside the blur mask and outside it.

Local blur (a moving object before a still background) is scored on the blurred region, to see
whether it was restored, and on the rest, to see whether the sharp background stayed sharp. Two
published protocols differ in what they divide by, so their numbers are not comparable:

- ``official``, BladeNet/LODE's ``eval.py`` (``calculate_local_psnr_above``/``_below``,
  ``calculate_local_ssim_above``/``_below``): every pixel outside the region is set to 0 in both
  images, then the whole-image PSNR/SSIM is taken. The MSE is averaged over all ``H x W x 3``
  values, zeros included, so a small region's PSNR is inflated (by ``10 log10(H W / area)`` dB
  over ``mask_area``), and the zeroed area scores SSIM 1. Reproduced deliberately, to compare with
  the paper.
- ``mask_area``, ReLoBlur/LBAG's weighted PSNR/SSIM (``weighted_psnr_metric``,
  ``weighted_ssim_metric``): the squared error summed over the region divided by (region area x 3);
  the SSIM map of the unmasked images averaged over the region.

Both score 8-bit images as the ``psnr`` and ``ssim`` metrics do: clamped to [0, 1], ``x * 255``
rounded, float64, peak 255, SSIM with an 11 x 11 Gaussian window (sigma 1.5) per channel over the
valid region (BasicSR/MATLAB, which is also what both official scripts use).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor

from deblurstack import Metric
from deblurstack.plugins.metrics.fidelity import PEAK, CropBorder, check_pair, prepare
from deblurstack.plugins.metrics.ssim import WINDOW, blur_valid, gaussian_window, ssim_map

Protocol = Literal["official", "mask_area"]
#: a mask value above it marks a blurred pixel; 0 makes every non-zero value blurred
Threshold = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]

_RULES = {
    "official": "BladeNet/LODE eval.py: pixels outside the region zeroed in both images, "
    "then scored over the WHOLE image (MSE over all H*W*3 values; inflates a small region's PSNR)",
    "mask_area": "ReLoBlur/LBAG weighted: squared error summed over the region / (region area x 3)",
}
_SSIM_RULES = {
    "official": "BladeNet/LODE eval.py: pixels outside the region zeroed in both images, then the whole-image "
    "SSIM (the zeroed area counts, with SSIM 1)",
    "mask_area": "ReLoBlur/LBAG weighted: SSIM map of the unmasked images averaged over the region's pixels "
    "in the valid area (5 px from the edges), then over channels",
}


def blur_region(blur_mask: Tensor, like: Tensor, threshold: float = 0.0, crop_border: int = 0) -> Tensor:
    """The blurred region of each image as a ``B x 1 x H' x W'`` bool tensor (``blur_mask > threshold``).

    Args:
        blur_mask: ``B x H x W`` or ``B x 1 x H x W`` map (float in [0, 1], bool or integer; non-zero = blurred).
        like: the ``B x 3 x H x W`` images it belongs to (its batch, size and device are checked and used).
        threshold: mask values above it are blurred.
        crop_border: pixels trimmed from each edge, as the images are.
    """
    mask = blur_mask.unsqueeze(1) if blur_mask.dim() == 3 else blur_mask
    batch, _, height, width = like.shape
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != batch or mask.shape[-2:] != (height, width):
        raise ValueError(
            f"blur_mask must be B x H x W or B x 1 x H x W for images {tuple(like.shape)}, got {tuple(blur_mask.shape)}"
        )
    region = mask.detach().to(device=like.device, dtype=torch.float64) > threshold
    if crop_border:
        region = region[..., crop_border:-crop_border, crop_border:-crop_border]
    return region


def local_psnr(output: Tensor, target: Tensor, region: Tensor, protocol: Protocol) -> Tensor:
    """PSNR (peak 255) of two 8-bit-level batches on ``region`` (``B x 1 x H x W`` bool) under ``protocol``.

    ``inf`` where the region's pixels are identical, NaN where the region is empty.
    """
    weight = region.to(output.dtype)
    squared = ((output - target) ** 2 * weight).sum(dim=(1, 2, 3))
    area = weight.sum(dim=(1, 2, 3))
    count = output[0].numel() if protocol == "official" else area * output.shape[1]
    psnr = 10.0 * torch.log10(PEAK**2 / (squared / count))  # a zero error gives inf
    return torch.where(area > 0, psnr, torch.full_like(psnr, torch.nan))


def local_ssim(output: Tensor, target: Tensor, region: Tensor, protocol: Protocol) -> Tensor:
    """Per-channel Gaussian SSIM of two 8-bit-level batches on ``region`` (``B x 1 x H x W`` bool).

    NaN where the region is empty (``mask_area``: where it has no pixel in the valid area).
    """
    window = gaussian_window(device=output.device)

    def blur(maps: Tensor) -> Tensor:
        return blur_valid(maps, window)

    weight = region.to(output.dtype)
    if protocol == "official":
        values = ssim_map(output * weight, target * weight, blur).mean(dim=(1, 2, 3))
        area = weight.sum(dim=(1, 2, 3))
    else:
        radius = WINDOW // 2
        inner = weight[..., radius:-radius, radius:-radius]  # the pixels the valid SSIM map covers
        area = inner.sum(dim=(1, 2, 3))
        values = (ssim_map(output, target, blur) * inner).sum(dim=(1, 2, 3)) / (area * output.shape[1])
    return torch.where(area > 0, values, torch.full_like(values, torch.nan))


class _LocalMetric(Metric):
    """What the local PSNR and SSIM share: the mask, the two regions and the protocol line."""

    measure = ""
    perfect = ""  # the score of an identical region

    def __init__(self, protocol: Protocol, threshold: float, crop_border: int) -> None:
        super().__init__()
        self.protocol_name = protocol
        self.threshold = threshold
        self.crop_border = crop_border

    def describe(self, rule: str, conventions: str) -> str:
        return (
            f"{self.measure} on the blur region (in: blur_mask > {self.threshold:g}) and the rest (out), "
            f"protocol {self.protocol_name} = {rule}; {conventions}, crop_border={self.crop_border}, float64; "
            f"{self.perfect} if the region is identical; NaN if it is empty (no pixel to score), "
            "meant to be left out of the mean"
        )

    def regions(self, output: Tensor, target: Tensor, aux: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Both images as 8-bit levels (cropped) and the blurred region."""
        if "blur_mask" not in aux:
            raise ValueError(f"local {self.measure} needs the blur_mask input (B x H x W, non-zero = blurred)")
        check_pair(output, target, self.crop_border)
        region = blur_region(aux["blur_mask"], output, self.threshold, self.crop_border)
        return prepare(output, self.crop_border), prepare(target, self.crop_border), region

    def forward(self, output: Tensor, target: Tensor, **aux: Tensor) -> dict[str, Tensor]:
        x, y, region = self.regions(output, target, aux)
        return {"in": self.score(x, y, region), "out": self.score(x, y, ~region)}

    def score(self, output: Tensor, target: Tensor, region: Tensor) -> Tensor:
        raise NotImplementedError


class LocalPSNR(_LocalMetric):
    """PSNR inside the blur mask and outside it; returns ``{"in": B, "out": B}`` (columns ``local_psnr_in/out``).

    ``in`` is the blurred region (``blur_mask > threshold``), ``out`` the rest: the background that
    should stay sharp. Images are 8-bit-rounded RGB as for ``psnr`` (float64, peak 255).

    ``protocol="official"`` (BladeNet/LODE ``eval.py``): ``MSE = sum over region of (x - y)^2 /
    (H W 3)``, i.e. the pixels outside the region are zeroed in both images and the MSE is taken over
    the whole image. This inflates the score of a small region by ``10 log10(H W / area)`` dB; it is
    kept to compare with the paper. ``protocol="mask_area"`` (ReLoBlur/LBAG weighted PSNR): ``MSE =
    sum over region of (x - y)^2 / (area 3)``. The two are not comparable with each other.

    A region with identical pixels gives ``inf`` (as ``psnr``); an empty region (an image without any
    blurred pixel, or entirely blurred for ``out``) gives NaN. BladeNet's ``eval.py`` gets ``inf`` there
    and drops such an image from every average; here only the empty region's value is missing.

    Args:
        protocol: ``official`` (BladeNet's whole-image mean) or ``mask_area`` (ReLoBlur's region mean).
        threshold: mask values above it mark the blurred region (0: every non-zero value; masks are in [0, 1]).
        crop_border: pixels trimmed from each edge of the images and the mask before comparing.
    """

    measure = "PSNR"
    perfect = "inf"

    def __init__(
        self, protocol: Protocol = "official", threshold: Threshold = 0.0, crop_border: CropBorder = 0
    ) -> None:
        super().__init__(protocol, threshold, crop_border)
        self.protocol = self.describe(_RULES[protocol], "RGB clamped to [0,1] and rounded to uint8, peak 255")

    def score(self, output: Tensor, target: Tensor, region: Tensor) -> Tensor:
        return local_psnr(output, target, region, self.protocol_name)


class LocalSSIM(_LocalMetric):
    """SSIM inside the blur mask and outside it; returns ``{"in": B, "out": B}`` (columns ``local_ssim_in/out``).

    SSIM as the ``ssim`` metric's ``gaussian`` variant (the one both official scripts use): 8-bit-rounded
    RGB, per channel, 11 x 11 Gaussian window (sigma 1.5), valid region only, float64. Images need at
    least 11 x 11 pixels after cropping.

    ``protocol="official"`` (BladeNet/LODE ``eval.py``): the pixels outside the region are zeroed in
    both images and the whole-image SSIM is taken; the zeroed area scores 1, so a small region's SSIM
    is inflated. ``protocol="mask_area"`` (ReLoBlur/LBAG weighted SSIM): the SSIM map of the unmasked
    images is averaged over the region's pixels (those at least 5 pixels from the edges, where the
    valid map is defined), then over channels. An empty region gives NaN.

    Args:
        protocol: ``official`` (BladeNet's zeroed whole image) or ``mask_area`` (ReLoBlur's region mean).
        threshold: mask values above it mark the blurred region (0: every non-zero value; masks are in [0, 1]).
        crop_border: pixels trimmed from each edge of the images and the mask before comparing.
    """

    measure = "SSIM"
    perfect = "1"

    def __init__(
        self, protocol: Protocol = "official", threshold: Threshold = 0.0, crop_border: CropBorder = 0
    ) -> None:
        super().__init__(protocol, threshold, crop_border)
        self.protocol = self.describe(
            _SSIM_RULES[protocol],
            "RGB clamped to [0,1] and rounded to uint8, 11x11 Gaussian sigma 1.5 per channel, valid region, "
            "C1=(0.01*255)^2, C2=(0.03*255)^2",
        )

    def regions(self, output: Tensor, target: Tensor, aux: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        x, y, region = super().regions(output, target, aux)
        if min(x.shape[-2:]) < WINDOW:
            raise ValueError(f"gaussian SSIM needs at least {WINDOW}x{WINDOW} pixels, got {tuple(x.shape[-2:])}")
        return x, y, region

    def score(self, output: Tensor, target: Tensor, region: Tensor) -> Tensor:
        return local_ssim(output, target, region, self.protocol_name)


__all__ = ["LocalPSNR", "LocalSSIM", "Protocol", "Threshold", "blur_region", "local_psnr", "local_ssim"]
