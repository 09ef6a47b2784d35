"""SSIM on 8-bit images: the common per-channel Gaussian SSIM, and NAFNet's 3-D Gaussian SSIM.

Both use an 11-tap Gaussian window (sigma 1.5) applied as separable convolutions in float64, and
C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2 (Wang et al. 2004).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from deblurstack import Metric
from deblurstack.plugins.metrics.fidelity import PEAK, CropBorder, check_pair, prepare

WINDOW = 11
SIGMA = 1.5
C1 = (0.01 * PEAK) ** 2
C2 = (0.03 * PEAK) ** 2


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA, device: torch.device | None = None) -> Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (the same as ``cv2.getGaussianKernel(size, sigma)``)."""
    x = torch.arange(size, dtype=torch.float64, device=device) - size // 2
    window = torch.exp(-(x**2) / (2 * sigma**2))
    return window / window.sum()


def blur_valid(maps: Tensor, window: Tensor) -> Tensor:
    """Gaussian over H and W of each channel of ``N x C x H x W``, valid region only (no padding)."""
    n, c, h, w = maps.shape
    flat = maps.reshape(n * c, 1, h, w)
    flat = F.conv2d(F.conv2d(flat, window.view(1, 1, -1, 1)), window.view(1, 1, 1, -1))
    return flat.view(n, c, *flat.shape[-2:])


def blur_volume(maps: Tensor, window: Tensor) -> Tensor:
    """Gaussian over the C x H x W volume of ``N x C x H x W``, replicate padding on all three axes.

    NAFNet applies one 11x11x11 kernel (the outer product of three 1-D Gaussians); the separable
    form gives the same result on the replicate-padded volume.
    """
    radius = window.numel() // 2
    volume = F.pad(maps.unsqueeze(1), (radius,) * 6, mode="replicate")
    for shape in ((-1, 1, 1), (1, -1, 1), (1, 1, -1)):
        volume = F.conv3d(volume, window.view(1, 1, *shape))
    return volume.squeeze(1)


def ssim_map(x: Tensor, y: Tensor, blur: Callable[[Tensor], Tensor]) -> Tensor:
    """The SSIM map of two 8-bit-level batches, with local statistics from ``blur`` (population covariance)."""
    mu_x, mu_y, xx, yy, xy = blur(torch.cat([x, y, x * x, y * y, x * y])).split(x.shape[0])
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    return ((2 * mu_x * mu_y + C1) * (2 * cov + C2)) / ((mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2))


class SSIM(Metric):
    """SSIM of images clamped to [0, 1] and rounded to 8-bit levels (range 255), float64.

    ``variant="gaussian"``: per channel, 11x11 Gaussian window (sigma 1.5), valid region only,
    mean over pixels and channels: BasicSR's ``calculate_ssim`` (``ssim3d=False``), the MATLAB
    reference code, and ``skimage.metrics.structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``. Images need at least 11 x 11 pixels after cropping.

    ``variant="gaussian3d"``: NAFNet's default (``ssim3d=True``, also SAM-Deblur and Blur2Blur):
    one 11x11x11 Gaussian (sigma 1.5 on H, W and channels) over the H x W x C volume with replicate
    padding, mean over the whole volume. NAFNet computes it in float32; float64 here differs by ~1e-6.
    With ``test_y_channel`` it reduces to a 2-D Gaussian with replicate padding on Y, as NAFNet does.

    Args:
        variant: ``gaussian`` (per-channel, valid region) or ``gaussian3d`` (NAFNet's cross-channel SSIM).
        crop_border: pixels trimmed from each edge before comparing.
        test_y_channel: compare the BT.601 Y channel (16..235 scale) instead of RGB.
    """

    def __init__(
        self,
        variant: Literal["gaussian", "gaussian3d"] = "gaussian",
        crop_border: CropBorder = 0,
        test_y_channel: bool = False,
    ) -> None:
        super().__init__()
        self.variant = variant
        self.crop_border = crop_border
        self.test_y_channel = test_y_channel
        channel = "BT.601 Y (16-235)" if test_y_channel else "RGB"
        window = (
            "11x11 Gaussian sigma 1.5 per channel, valid region (no padding), mean over channels"
            if variant == "gaussian"
            else "11x11x11 Gaussian sigma 1.5 over the H x W x C volume (NAFNet ssim3d), replicate padding"
        )
        self.protocol = (
            f"SSIM on {channel}, outputs clamped to [0,1] and rounded to uint8, {window}, "
            f"C1=(0.01*255)^2, C2=(0.03*255)^2, crop_border={crop_border}, float64"
        )

    def forward(self, output: Tensor, target: Tensor, **aux: Tensor) -> Tensor:
        check_pair(output, target, self.crop_border)
        x = prepare(output, self.crop_border, self.test_y_channel)
        y = prepare(target, self.crop_border, self.test_y_channel)
        window = gaussian_window(device=x.device)
        if self.variant == "gaussian":
            if min(x.shape[-2:]) < WINDOW:
                raise ValueError(f"gaussian SSIM needs at least {WINDOW}x{WINDOW} pixels, got {tuple(x.shape[-2:])}")
            values = ssim_map(x, y, lambda maps: blur_valid(maps, window))
        else:
            values = ssim_map(x, y, lambda maps: blur_volume(maps, window))
        return values.mean(dim=(1, 2, 3))
