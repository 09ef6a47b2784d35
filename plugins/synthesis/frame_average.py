"""Frame averaging in linear space, as GoPro, REDS and LODE's local blur synthesis make their blur."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import AfterValidator, Field

from deblurstack import Synthesizer
from deblurstack.plugins.synthesis.common import Gamma, NoiseSigma, add_noise, check_frames, from_linear, odd, to_linear

#: odd; at most 255 frames are held at once (2.8 GB of float32 RGB at 1280 x 720)
Frames = Annotated[int, Field(ge=1, le=255), AfterValidator(odd)]


class FrameAverage(Synthesizer):
    """Blur from the mean of ``frames`` consecutive sharp frames: ``B = g(mean_i g^-1(S_i))``, target the middle one.

    ``g^-1(y) = y ** gamma`` approximates the camera response, as for GoPro (Nah et al. 2017) and
    in LODE's local blur synthesis; the target is the middle frame ``S[frames // 2]``, as in GoPro.
    Unlike LODE (research pitfall 15), the average is kept in float and not truncated to uint8.
    Frames are not interpolated first (REDS does): the source should be fast enough (GoPro: 240 fps)
    that consecutive frames move by about a pixel.

    Args:
        frames: number of consecutive sharp frames averaged into one blurry image; odd, so that
            there is a middle frame (GoPro averages 7 to 13 frames at 240 fps, LODE 5 to 21).
        gamma: exponent of the camera response ``g^-1(y) = y ** gamma``; 1.0 averages the values as they are.
        noise_sigma: std of white Gaussian noise added to the blurry image after ``g`` (on [0, 1] values).
    """

    def __init__(self, frames: Frames = 7, gamma: Gamma = 2.2, noise_sigma: NoiseSigma = 0.0) -> None:
        self.frames, self.gamma, self.noise_sigma = frames, gamma, noise_sigma

    def __call__(self, frames: list[np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        sharp = check_frames(frames, self.frames)
        linear = sum(to_linear(frame, self.gamma) for frame in sharp) / len(sharp)
        blurry = add_noise(from_linear(linear, self.gamma), self.noise_sigma, rng)
        return {"input": blurry, "target": sharp[self.frames // 2]}
