"""The RealBlur/RSBlur evaluation: PSNR and SSIM after intensity matching and ECC homography alignment.

Real captures have a slightly misaligned ground truth, so each prediction is first aligned to it.
This follows the official ``evaluation_RealBlur_ecc.py`` (Rim et al. 2020), which Restormer and
RSBlur use; it runs per image with NumPy, OpenCV and scikit-image on the CPU.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import Tensor

from deblurstack import Metric
from deblurstack.plugins.metrics.fidelity import check_pair, to_levels

ECC_ITERATIONS = 100
ECC_GAUSS_SIZE = 5
SSIM_BORDER = 5  # the Gaussian window's radius: int(3.5 * 1.5 + 0.5)


def align(prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intensity-match and warp ``prediction`` onto ``target`` (``H x W x 3`` float32 RGB).

    Returns the masked warped prediction, the masked target and the validity mask (``H x W x 3``).
    Falls back to the identity warp, with a warning, when ECC fails.
    """
    scaled = prediction * (np.sum(target * prediction) / max(float(np.sum(prediction * prediction)), 1e-12))
    warp = np.eye(3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, 0)
    try:
        _, warp = cv2.findTransformECC(
            _gray(target), _gray(scaled), warp, cv2.MOTION_HOMOGRAPHY, criteria, None, ECC_GAUSS_SIZE
        )
    except cv2.error as error:
        reason = str(error).strip().splitlines()[-1]
        warnings.warn(f"realblur: ECC alignment failed ({reason}); scoring without alignment", stacklevel=2)
        warp = np.eye(3, dtype=np.float32)
    size = (target.shape[1], target.shape[0])
    inverse = cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(scaled, warp, size, flags=cv2.INTER_CUBIC + inverse, borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpPerspective(
        np.ones_like(scaled), warp, size, flags=cv2.INTER_NEAREST + inverse, borderMode=cv2.BORDER_CONSTANT
    )
    return warped * mask, target * mask, mask


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def aligned_scores(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """RealBlur PSNR and SSIM of one ``H x W x 3`` float32 pair in [0, 1]."""
    warped, masked_target, mask = (a.astype(np.float64) for a in align(prediction, target))
    # MSE over the valid region: squared error summed over the image / number of valid values
    mse = np.sum((masked_target - warped) ** 2) / np.sum(mask)
    psnr = 10 * np.log10(1.0 / mse) if mse > 0 else float("inf")
    _, ssim_map = structural_similarity(
        masked_target,
        warped,
        channel_axis=-1,
        gaussian_weights=True,
        use_sample_covariance=False,
        data_range=1.0,
        full=True,
    )
    # masked SSIM map, 5-pixel border cropped, mean over the valid area per channel, then over channels
    inner = (slice(SSIM_BORDER, -SSIM_BORDER),) * 2
    per_channel = (ssim_map * mask)[inner].sum(axis=(0, 1)) / mask[inner].sum(axis=(0, 1))
    return float(psnr), float(per_channel.mean())


class RealBlurAligned(Metric):
    """RealBlur/RSBlur aligned PSNR and SSIM; returns ``{"psnr": B, "ssim": B}``.

    Per image: both images are clamped and rounded to 8-bit levels (the official script reads PNGs);
    the prediction ``z`` is scaled to the target ``x`` by ``sum(x z) / sum(z z)``; a homography is
    estimated with ``cv2.findTransformECC`` (100 iterations, eps 0, Gaussian filter size 5, on
    grayscale); the prediction is warped (cubic, inverse map, reflect border) with a validity mask
    (nearest, zero border); PSNR uses the MSE over the valid region (data range 1); SSIM is
    scikit-image's Gaussian SSIM map (data range 1, population covariance) times the mask, its
    5-pixel border cropped, averaged over the valid area per channel, then over channels.
    Scores are not comparable with unaligned PSNR/SSIM on the same images.
    """

    def __init__(self) -> None:
        super().__init__()
        self.protocol = (
            "RealBlur/RSBlur: uint8-rounded RGB, intensity match z*sum(xz)/sum(zz), ECC homography "
            "(100 it, eps 0, gauss 5, gray), cubic/reflect warp + nearest mask; PSNR = MSE over valid area, "
            "range 1; SSIM = skimage Gaussian map x mask, 5 px border cropped, valid-area mean per channel"
        )

    def forward(self, output: Tensor, target: Tensor, **aux: Tensor) -> dict[str, Tensor]:
        check_pair(output, target)
        scores = [aligned_scores(p, t) for p, t in zip(_to_hwc(output), _to_hwc(target), strict=True)]
        psnr, ssim = torch.tensor(scores, dtype=torch.float64, device=output.device).reshape(-1, 2).unbind(1)
        return {"psnr": psnr, "ssim": ssim}


def _to_hwc(images: Tensor) -> np.ndarray:
    """``B x 3 x H x W`` in [0, 1] -> ``B x H x W x 3`` float32 rounded to 8-bit levels (as a saved PNG)."""
    return np.ascontiguousarray((to_levels(images) / 255).permute(0, 2, 3, 1).cpu().float().numpy())
