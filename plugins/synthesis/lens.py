"""Shift-invariant blur from the lens: defocus (a uniform disc, the geometric-optics circle of confusion)
and a Gaussian point-spread function (a soft, aberrated or slightly out-of-focus lens)."""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from pydantic import Field

from deblurstack import Synthesizer
from deblurstack.plugins.synthesis.common import Gamma, NoiseSigma, add_noise, check_frames
from deblurstack.plugins.synthesis.motion_blur import apply_kernel

#: a kernel radius or Gaussian std in pixels (a 1023-pixel kernel at most)
Radius = Annotated[float, Field(ge=0.0, le=511.0, allow_inf_nan=False)]
#: subsamples per pixel side used to anti-alias the disc's edge
SUPERSAMPLE = 8


def disc_kernel(radius: float) -> np.ndarray:
    """A uniform disc of ``radius`` pixels (float64, sum 1, odd side ``2 ceil(radius) + 1``).

    Each pixel's weight is the fraction of its area inside the circle (estimated on an 8 x 8 grid of
    subsamples), so the kernel changes continuously with the radius. Radius 0 is the identity (one pixel).
    """
    if not 0 <= radius <= 511:
        raise ValueError(f"radius must be in [0, 511], got {radius}")
    half = math.ceil(radius)
    if radius < 0.5 / SUPERSAMPLE:  # smaller than a subsample: no pixel but the centre is reached
        return np.ones((1, 1))
    offsets = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    axis = (np.arange(-half, half + 1)[:, None] + offsets[None, :]).ravel()  # subsample positions
    inside = (axis[:, None] ** 2 + axis[None, :] ** 2 <= radius**2).astype(np.float64)
    side = 2 * half + 1
    kernel = inside.reshape(side, SUPERSAMPLE, side, SUPERSAMPLE).sum(axis=(1, 3))
    return kernel / kernel.sum()


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A sampled isotropic Gaussian of std ``sigma`` pixels (float64, sum 1, side ``2 ceil(3 sigma) + 1``);
    sigma 0 is the identity."""
    if not 0 <= sigma <= 170:
        raise ValueError(f"sigma must be in [0, 170], got {sigma}")
    half = math.ceil(3 * sigma)
    if half == 0:
        return np.ones((1, 1))
    axis = np.arange(-half, half + 1, dtype=np.float64)
    profile = np.exp(-0.5 * (axis / sigma) ** 2)
    kernel = np.outer(profile, profile)
    return kernel / kernel.sum()


def _draw(rng: np.random.Generator, low: float, high: float) -> float:
    if low > high:
        raise ValueError(f"the range is empty: {low} > {high}")
    return float(rng.uniform(low, high)) if high > low else float(low)


class Defocus(Synthesizer):
    """Out-of-focus blur of one sharp image: ``B = g(disc_r * g^-1(S)) + noise``, clipped to [0, 1].

    The kernel is a uniform disc (the circle of confusion of geometric optics; real lenses add rings
    and cat's-eye vignetting, which this leaves out) whose radius is drawn uniformly per image.
    The whole image is at one depth: the blur is the same everywhere. The target is the sharp image.

    Args:
        min_radius: smallest disc radius in pixels (0 leaves the image sharp).
        max_radius: largest disc radius in pixels (at least ``min_radius``).
        gamma: exponent of the camera response ``g^-1(y) = y ** gamma``; 1.0 blurs the values as they are.
        noise_sigma: std of white Gaussian noise added to the blurry image after ``g`` (on [0, 1] values).
    """

    def __init__(
        self, min_radius: Radius = 1.0, max_radius: Radius = 4.0, gamma: Gamma = 2.2, noise_sigma: NoiseSigma = 0.0
    ) -> None:
        if min_radius > max_radius:  # a relation between two parameters, which no hint can state
            raise ValueError(f"min_radius must be <= max_radius, got {min_radius} > {max_radius}")
        self.min_radius, self.max_radius, self.gamma, self.noise_sigma = min_radius, max_radius, gamma, noise_sigma

    def sample_kernel(self, rng: np.random.Generator) -> np.ndarray:
        """One random kernel (what :meth:`__call__` draws first from ``rng``)."""
        return disc_kernel(_draw(rng, self.min_radius, self.max_radius))

    def __call__(self, frames: list[np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        (sharp,) = check_frames(frames, 1)
        blurry = apply_kernel(sharp, self.sample_kernel(rng), self.gamma)
        return {"input": add_noise(blurry, self.noise_sigma, rng), "target": sharp}


class GaussianBlur(Synthesizer):
    """Gaussian blur of one sharp image: ``B = g(G_sigma * g^-1(S)) + noise``, clipped to [0, 1].

    A smooth, bell-shaped point-spread function (a soft lens, atmospheric blur, a slight focus
    error seen through aberrations), with ``sigma`` drawn uniformly per image. The target is the sharp image.

    Args:
        min_sigma: smallest std of the Gaussian in pixels (0 leaves the image sharp).
        max_sigma: largest std in pixels (at least ``min_sigma``); the kernel is ``2 ceil(3 sigma) + 1`` wide.
        gamma: exponent of the camera response ``g^-1(y) = y ** gamma``; 1.0 blurs the values as they are.
        noise_sigma: std of white Gaussian noise added to the blurry image after ``g`` (on [0, 1] values).
    """

    def __init__(
        self,
        min_sigma: Annotated[float, Field(ge=0.0, le=170.0, allow_inf_nan=False)] = 0.5,
        max_sigma: Annotated[float, Field(ge=0.0, le=170.0, allow_inf_nan=False)] = 2.0,
        gamma: Gamma = 2.2,
        noise_sigma: NoiseSigma = 0.0,
    ) -> None:
        if min_sigma > max_sigma:
            raise ValueError(f"min_sigma must be <= max_sigma, got {min_sigma} > {max_sigma}")
        self.min_sigma, self.max_sigma, self.gamma, self.noise_sigma = min_sigma, max_sigma, gamma, noise_sigma

    def sample_kernel(self, rng: np.random.Generator) -> np.ndarray:
        """One random kernel (what :meth:`__call__` draws first from ``rng``)."""
        return gaussian_kernel(_draw(rng, self.min_sigma, self.max_sigma))

    def __call__(self, frames: list[np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        (sharp,) = check_frames(frames, 1)
        blurry = apply_kernel(sharp, self.sample_kernel(rng), self.gamma)
        return {"input": add_noise(blurry, self.noise_sigma, rng), "target": sharp}
