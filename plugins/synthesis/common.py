"""What the synthesizers share: frame checks, the gamma camera response and sensor noise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import numpy as np
from pydantic import Field


def odd(value: int) -> int:
    """``value`` if it is odd: a kernel needs a centre pixel, an average of frames a middle frame."""
    if value % 2 == 0:
        raise ValueError(f"must be odd, got {value}")
    return value


#: exponent of the camera response ``g^-1(y) = y ** gamma``
Gamma = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
#: std of white Gaussian noise on [0, 1] values
NoiseSigma = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


def check_frames(frames: Sequence[np.ndarray], count: int) -> list[np.ndarray]:
    """``frames`` as float32 arrays, after checking there are ``count`` of them, all ``H x W x 3`` of one size."""
    if len(frames) != count:
        raise ValueError(f"expected {count} frame(s), got {len(frames)}")
    arrays = [np.asarray(frame, dtype=np.float32) for frame in frames]
    for array in arrays:
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"frames must be H x W x 3 RGB arrays, got shape {array.shape}")
        if array.shape != arrays[0].shape:
            raise ValueError(f"frames differ in size: {arrays[0].shape} and {array.shape}")
    return arrays


def to_linear(image: np.ndarray, gamma: float) -> np.ndarray:
    """Inverse camera response ``g^-1(y) = y ** gamma`` (the gamma-2.2 approximation used for GoPro)."""
    return np.clip(image, 0.0, 1.0) ** gamma


def from_linear(linear: np.ndarray, gamma: float) -> np.ndarray:
    """Camera response ``g(x) = x ** (1 / gamma)``."""
    return np.clip(linear, 0.0, 1.0) ** (1.0 / gamma)


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise of std ``sigma`` (signal-independent, in display space), clip to [0, 1], float32."""
    if sigma > 0:
        image = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)
