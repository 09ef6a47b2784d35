"""Frame averaging from one photo: the frames a camera would record while it sweeps (pans, rolls, zooms)
across a still scene, averaged in linear space as GoPro and REDS make their blur.

The existing ``frame_average`` needs real consecutive frames; this makes them from one sharp image
by warping it along a smooth camera motion, so the embedded photos can have frame-averaging blur.
Rotation and zoom make the blur vary across the image (longer streaks far from the rotation centre,
radial ones under zoom), which no single convolution kernel gives; with few frames over a long sweep
the average shows separate copies (ghosting), as averaging a low-frame-rate video does.
"""

from __future__ import annotations

import math
from typing import Annotated

import cv2
import numpy as np
from pydantic import AfterValidator, Field

from deblurstack import Synthesizer
from deblurstack.plugins.synthesis.common import Gamma, NoiseSigma, add_noise, check_frames, from_linear, odd, to_linear

#: odd (the middle frame is the target); at least 3
SweepFrames = Annotated[int, Field(ge=3, le=255), AfterValidator(odd)]
Pixels = Annotated[float, Field(ge=0.0, le=1000.0, allow_inf_nan=False)]


def sweep_warps(
    rng: np.random.Generator,
    height: int,
    width: int,
    frames: int,
    shift: float,
    max_rotation: float,
    max_zoom: float,
    curvature: float,
) -> list[np.ndarray]:
    """``frames`` 2 x 3 affine maps (source pixel -> frame pixel) of a random camera sweep; the middle is the identity.

    Frame ``i`` is at time ``t`` from -1/2 to 1/2. The translation follows a parabola: ``shift`` pixels
    along a random direction over the exposure, bent sideways by up to ``curvature * shift`` pixels at its ends;
    rotation (about a random point of the image) and zoom (about the same point) grow linearly in
    ``t`` to a random total in ``[-max_rotation, max_rotation]`` degrees and ``[-max_zoom, max_zoom]``.
    """
    direction = 2 * math.pi * rng.uniform()
    along = np.array([math.cos(direction), math.sin(direction)])
    across = np.array([-along[1], along[0]])
    bend = curvature * shift * rng.uniform(-1.0, 1.0)
    rotation = math.radians(max_rotation) * rng.uniform(-1.0, 1.0)
    zoom = max_zoom * rng.uniform(-1.0, 1.0)
    centre = np.array([rng.uniform(0, width - 1), rng.uniform(0, height - 1)])
    warps = []
    for t in np.linspace(-0.5, 0.5, frames):
        angle, scale = rotation * t, 1.0 + zoom * t
        linear = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        offset = centre - linear @ centre + shift * t * along + bend * 4 * t * t * across
        warps.append(np.hstack([linear, offset[:, None]]))
    return warps


class CameraSweep(Synthesizer):
    """Frame-averaging blur of one sharp image: ``B = g(mean_i g^-1(W_i S)) + noise``, target ``S`` (the middle frame).

    ``W_i`` are ``frames`` affine warps along one random camera sweep (:func:`sweep_warps`): a
    translation of a length drawn uniformly in ``[min_shift, max_shift]`` pixels along a slightly
    curved path, plus a small roll and zoom about a random point, so the blur is spatially varying.
    The middle frame is the unwarped image, as GoPro's target is the middle frame of the average.
    Frames are warped with bilinear interpolation and reflected borders (the borders of a long
    sweep therefore show mirrored content, as ``motion_blur``'s reflected borders do).

    Args:
        frames: number of frames averaged; odd, so that the middle frame is the sharp image. Few
            frames over a long sweep give ghosting, as a low frame rate does (GoPro: 7 to 13 at 240 fps).
        min_shift: shortest translation over the exposure in pixels.
        max_shift: longest translation over the exposure in pixels (at least ``min_shift``).
        max_rotation: largest total roll over the exposure in degrees, about a random point of the image.
        max_zoom: largest relative change of scale over the exposure (0.05: 5 %).
        curvature: sideways bend of the path as a fraction of its length (0: a straight pan).
        gamma: exponent of the camera response ``g^-1(y) = y ** gamma``; 1.0 averages the values as they are.
        noise_sigma: std of white Gaussian noise added to the blurry image after ``g`` (on [0, 1] values).
    """

    def __init__(
        self,
        frames: SweepFrames = 15,
        min_shift: Pixels = 2.0,
        max_shift: Pixels = 16.0,
        max_rotation: Annotated[float, Field(ge=0.0, le=45.0, allow_inf_nan=False)] = 1.0,
        max_zoom: Annotated[float, Field(ge=0.0, le=0.5, allow_inf_nan=False)] = 0.02,
        curvature: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = 0.1,
        gamma: Gamma = 2.2,
        noise_sigma: NoiseSigma = 0.0,
    ) -> None:
        if min_shift > max_shift:  # a relation between two parameters, which no hint can state
            raise ValueError(f"min_shift must be <= max_shift, got {min_shift} > {max_shift}")
        self.frames, self.min_shift, self.max_shift = frames, min_shift, max_shift
        self.max_rotation, self.max_zoom, self.curvature = max_rotation, max_zoom, curvature
        self.gamma, self.noise_sigma = gamma, noise_sigma

    def sample_warps(self, rng: np.random.Generator, height: int, width: int) -> list[np.ndarray]:
        """The warps of one random sweep (what :meth:`__call__` draws first from ``rng``)."""
        shift = (
            float(rng.uniform(self.min_shift, self.max_shift)) if self.max_shift > self.min_shift else self.min_shift
        )
        return sweep_warps(rng, height, width, self.frames, shift, self.max_rotation, self.max_zoom, self.curvature)

    def __call__(self, frames: list[np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        (sharp,) = check_frames(frames, 1)
        height, width = sharp.shape[:2]
        linear = to_linear(sharp, self.gamma)
        total = np.zeros_like(linear)
        for warp in self.sample_warps(rng, height, width):
            total += cv2.warpAffine(
                linear,
                warp.astype(np.float32),
                (width, height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT_101,
            )
        blurry = from_linear(total / self.frames, self.gamma)
        return {"input": add_noise(blurry, self.noise_sigma, rng), "target": sharp}
