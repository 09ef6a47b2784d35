"""Camera-shake blur from random trajectories (Boracchi & Foi 2012, with DeblurGAN's generator settings).

A particle starts at 0 with a random direction and moves ``iterations - 1`` equal steps. At each
step its velocity gets a Gaussian kick, a centripetal pull back towards the origin and, rarely,
an impulsive "big shake" that roughly reverses it; then it is renormalised to the step length,
so the path length is exactly ``length``. One ``anxiety`` value scales all three perturbations
(DeblurGAN's ``expl``; 0 gives a straight line). The path, as complex positions ``x + iy``
(x to the right, y down, in pixels), is splatted bilinearly onto a kernel canvas.
"""

from __future__ import annotations

import cmath
import math
from typing import Annotated

import cv2
import numpy as np
from pydantic import AfterValidator, Field

from deblurstack import Synthesizer
from deblurstack.plugins.synthesis.common import Gamma, NoiseSigma, add_noise, check_frames, from_linear, odd, to_linear

#: DeblurGAN's choices for ``expl`` (our ``anxiety``), one drawn per kernel when not given.
ANXIETIES = (0.01, 0.009, 0.008, 0.007, 0.005, 0.003, 0.002, 0.001)
#: Exposure fractions drawn when not given: DeblurGAN's (1/1000, 1/10, 1/2, 1) without 1/1000,
#: whose kernel covers 2 of 2000 samples, i.e. an unblurred pair.
EXPOSURES = (0.1, 0.5, 1.0)

#: odd, so that the kernel has a centre pixel; DeblurGAN's canvas is 64 px
KernelSize = Annotated[int, Field(ge=1, le=1023), AfterValidator(odd)]


def random_trajectory(
    rng: np.random.Generator, length: float = 20.0, iterations: int = 2000, anxiety: float = 0.005
) -> np.ndarray:
    """A random camera-shake path: ``iterations`` complex positions, starting at 0, ``length`` pixels long.

    Per path, as in DeblurGAN: centripetal strength ``0.7 U``, big-shake probability per step
    ``0.2 U * anxiety``, Gaussian-shake strength ``10 U`` and a uniform initial direction
    (``U`` uniform in [0, 1)).

    Args:
        rng: source of every random draw.
        length: path length in pixels (the sum of the step lengths); its extent is at most this.
        iterations: number of positions (time samples) on the path, at least 2.
        anxiety: scale of all perturbations (DeblurGAN's ``expl``); 0 gives a straight segment.
    """
    if iterations < 2 or not length > 0 or anxiety < 0:
        raise ValueError(f"need iterations >= 2, length > 0, anxiety >= 0; got {iterations}, {length}, {anxiety}")
    steps = iterations - 1
    step = length / steps
    centripetal, big_shake, gaussian_shake = 0.7 * rng.uniform(), 0.2 * rng.uniform(), 10.0 * rng.uniform()
    velocity = step * cmath.exp(2j * math.pi * rng.uniform())
    # draws for every step at once (plain Python numbers make the sequential loop fast)
    shakes = (rng.uniform(size=steps) < big_shake * anxiety).tolist()
    turns = (rng.uniform(size=steps) - 0.5).tolist()
    kicks = (rng.standard_normal(steps) + 1j * rng.standard_normal(steps)).tolist()
    position, path = 0j, [0j]
    for shake, turn, kick in zip(shakes, turns, kicks, strict=True):
        if shake:  # impulsive shake: add twice the velocity turned by about 180 degrees
            velocity += 2 * velocity * cmath.exp(1j * (math.pi + turn))
        velocity += anxiety * (gaussian_shake * kick - centripetal * position) * step
        velocity *= step / abs(velocity)
        position += velocity
        path.append(position)
    return np.array(path)


def trajectory_kernel(trajectory: np.ndarray, size: int = 31) -> np.ndarray:
    """A ``size x size`` blur kernel (float64, non-negative, sum 1) from a path of complex positions.

    The path's bounding box is centred on the kernel centre, as DeblurGAN does, and every
    position (an equal share of the exposure time) is splatted bilinearly onto the four
    pixels around it. Unlike DeblurGAN, which min-max normalises its PSF, the kernel sums to 1.

    Args:
        trajectory: complex positions ``x + iy`` in pixels (x to the right, y down).
        size: odd side of the kernel; the path's extent must not exceed ``size - 1``.
    """
    points = np.asarray(trajectory, dtype=complex).ravel()
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    if points.size == 0:
        raise ValueError("the trajectory is empty")
    xs, ys = points.real, points.imag
    extent = max(np.ptp(xs), np.ptp(ys))
    if extent > size - 1 + 1e-9:
        raise ValueError(f"the trajectory spans {extent:.2f} px, more than a size-{size} kernel holds ({size - 1})")
    centre = (size - 1) / 2
    xs = np.clip(xs - (xs.min() + xs.max()) / 2 + centre, 0, size - 1)
    ys = np.clip(ys - (ys.min() + ys.max()) / 2 + centre, 0, size - 1)
    # canvas with one spare row and column: a position on the last pixel puts weight 0 there
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    canvas = np.zeros((size + 1) * (size + 1))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            canvas += np.bincount((y0 + dy) * (size + 1) + x0 + dx, weights=wy * wx, minlength=canvas.size)
    kernel = canvas.reshape(size + 1, size + 1)[:size, :size]
    return kernel / kernel.sum()


def apply_kernel(image: np.ndarray, kernel: np.ndarray, gamma: float = 2.2) -> np.ndarray:
    """Blur an ``H x W x 3`` image in linear space: ``g(kernel * g^-1(image))``, a true convolution.

    Borders are reflected (``dcb|abcd``). The kernel's centre pixel is the origin, so its side must be odd.

    Args:
        image: float RGB image in [0, 1].
        kernel: non-negative 2-D kernel of odd size, summing to 1.
        gamma: exponent of the camera response ``g^-1(y) = y ** gamma``; 1.0 blurs the values as they are.
    """
    if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise ValueError(f"the kernel must be 2-D with odd sides, got shape {kernel.shape}")
    linear = to_linear(np.asarray(image, dtype=np.float32), gamma)
    # cv2.filter2D correlates: flip the kernel for a convolution
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    blurred = cv2.filter2D(linear, -1, flipped, borderType=cv2.BORDER_REFLECT_101)
    return from_linear(blurred, gamma)


class MotionBlur(Synthesizer):
    """Global camera-shake blur of one sharp image: ``B = g(k * g^-1(S)) + noise``, clipped to [0, 1].

    ``k`` comes from :func:`random_trajectory` (Boracchi & Foi 2012, DeblurGAN's settings): the
    first ``exposure`` fraction of the path, splatted by :func:`trajectory_kernel`. Deliberate
    departures from DeblurGAN (research pitfall 17): the kernel sums to 1 (DeblurGAN min-max
    normalises kernel and image, which changes brightness and contrast); the blur is applied in
    linear space ``g^-1(y) = y ** gamma``, not to display values; the cut path is centred (DeblurGAN
    centres the whole path, so short exposures are shifted); reflected borders instead of zeros.
    The target is the sharp image itself.

    Args:
        kernel_size: odd side of the kernel canvas in pixels; must hold the path (``max_length <= kernel_size - 1``).
        max_length: length in pixels of the whole path (exposure 1); the blur extent is at most
            this. DeblurGAN uses 60 on a 64 canvas; with 20 and the other defaults, the blur
            extents range from about 2 to 18 px.
        iterations: time samples on the path (DeblurGAN: 2000).
        exposure: fraction of the path the shutter is open for, in (0, 1]; None draws one of
            0.1, 0.5 and 1 per image (DeblurGAN's fractions without 1/1000, which leaves the image sharp).
        anxiety: strength of the shake (DeblurGAN's ``expl``), >= 0, 0 for straight blur; None
            draws one of DeblurGAN's values 0.001 to 0.01 per image.
        gamma: exponent of the camera response ``g^-1(y) = y ** gamma``; 1.0 blurs the values as they are.
        noise_sigma: std of white Gaussian noise added to the blurry image after ``g`` (on [0, 1] values).
    """

    def __init__(
        self,
        kernel_size: KernelSize = 31,
        max_length: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 20.0,
        iterations: Annotated[int, Field(ge=2, le=1_000_000)] = 2000,  # one Python step each (DeblurGAN: 2000)
        exposure: Annotated[float, Field(gt=0.0, le=1.0)] | None = None,
        anxiety: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None,
        gamma: Gamma = 2.2,
        noise_sigma: NoiseSigma = 0.0,
    ) -> None:
        if max_length > kernel_size - 1:  # a relation between two parameters, which no hint can state
            raise ValueError(f"max_length must be <= kernel_size - 1 = {kernel_size - 1}, got {max_length}")
        self.kernel_size, self.max_length, self.iterations = kernel_size, max_length, iterations
        self.exposure, self.anxiety, self.gamma, self.noise_sigma = exposure, anxiety, gamma, noise_sigma

    def sample_kernel(self, rng: np.random.Generator) -> np.ndarray:
        """One random kernel (what :meth:`__call__` draws first from ``rng``)."""
        anxiety = self.anxiety if self.anxiety is not None else ANXIETIES[rng.integers(len(ANXIETIES))]
        exposure = self.exposure if self.exposure is not None else EXPOSURES[rng.integers(len(EXPOSURES))]
        path = random_trajectory(rng, self.max_length, self.iterations, anxiety)
        return trajectory_kernel(path[: max(1, round(exposure * self.iterations))], self.kernel_size)

    def __call__(self, frames: list[np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        (sharp,) = check_frames(frames, 1)
        blurry = apply_kernel(sharp, self.sample_kernel(rng), self.gamma)
        return {"input": add_noise(blurry, self.noise_sigma, rng), "target": sharp}
