"""The ``flow_mask`` mask source: the blur mask of a real pair, from optical flow between its two images.

Real local-blur pairs (LODE's captures) come without masks; BladeNet marks the blurred region as
the pixels whose optical flow is longer than 0.25 px (``data/opticalAnal.py``, ``data/util.py``).
The official code uses opencv-contrib's DeepFlow (``cv2.optflow.createOptFlow_DeepFlow``), which
the ``opencv-python`` wheel does not ship. This source uses OpenCV's DIS optical flow instead
(``cv2.DISOpticalFlow``, Kroeger et al., ECCV 2016), in the main module: like DeepFlow it is dense
and ends with a variational refinement of Brox et al.'s energy (colour and gradient constancy,
smoothness; DeepFlow minimises it too, with a matching term added), and its coarse-to-fine patch
search follows displacements of many pixels, where Farneback's polynomial expansion needs the
motion to be small against its window. It takes about 0.06 s at 1280x720 (``medium``, one
direction). Masks are therefore close to, not equal to, the official ones.

Flow between a blurry image and its sharp frame is weaker than between video frames: when the
sharp target is the middle frame of a symmetric blur, the object's centre barely moves, so the
mask can miss part of a strongly blurred region. Lower ``threshold`` or pass real masks
(``local_blur_folder``) when that matters.
"""

from __future__ import annotations

from typing import Annotated, Literal

import cv2
import numpy as np
from pydantic import Field

from deblurstack import ImageError, Pair, read_image
from deblurstack.plugins.segmentation.grouping import SegmentationError

Preset = Literal["ultrafast", "fast", "medium"]
PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
#: DIS refuses images smaller than this on both sides
SMALLEST_SIDE = 12


def gray_levels(image: np.ndarray) -> np.ndarray:
    """``H x W x 3`` RGB in [0, 1] -> ``H x W`` uint8 luma (rounded to 8-bit levels first, as a saved image)."""
    levels = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    return cv2.cvtColor(levels, cv2.COLOR_RGB2GRAY)


def flow_magnitude(first: np.ndarray, second: np.ndarray, preset: Preset = "medium") -> np.ndarray:
    """Length in pixels of the DIS flow from ``first`` to ``second`` (``H x W`` uint8 each), ``H x W`` float32."""
    flow = cv2.DISOpticalFlow_create(PRESETS[preset]).calc(first, second, None)
    return np.hypot(flow[..., 0], flow[..., 1])


class FlowMask:
    """Blur mask of a pair: 1 where the optical flow between the blurry input and the sharp target is long.

    The sharp target is read from ``pair.target`` (a pair whose target is its input file compares the image
    with itself: nothing moves). Both images are rounded to 8-bit levels and reduced to luma, as BladeNet
    does; the flow is OpenCV's DIS (see the module notes for why not DeepFlow or Farneback). The mask is
    ``float32`` 0/1 (``H x W``), the ``blur_mask`` the local metrics read.

    With a cache (``cache:`` on the node) maps are keyed by the blurry image's pixels and these parameters,
    not by the target: keep one cache folder per dataset.

    Args:
        threshold: flow length in pixels above which a pixel counts as blurred (BladeNet: 0.25).
        preset: DIS preset; ``medium`` is the most accurate, ``fast`` and ``ultrafast`` about 5 times faster.
        symmetric: also compute the flow from the target to the input and take the longer of the two at each
            pixel, so the moving object is marked where it is in either image (twice the time).
    """

    def __init__(
        self,
        threshold: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.25,
        preset: Preset = "medium",
        symmetric: bool = True,
    ) -> None:
        self.threshold = threshold
        self.preset = preset
        self.symmetric = symmetric

    def __call__(self, image: np.ndarray, pair: Pair) -> np.ndarray:
        target = image if pair.target == pair.input else read_image(pair.target)
        if target.shape != image.shape:
            size, target_size = f"{image.shape[1]}x{image.shape[0]}", f"{target.shape[1]}x{target.shape[0]}"
            raise ImageError(f"{pair.target} is {target_size} but {pair.input} is {size}")
        if max(image.shape[:2]) < SMALLEST_SIDE:
            raise SegmentationError(
                f"{pair.input}: flow_mask needs an image of at least {SMALLEST_SIDE} pixels on one side, "
                f"got {image.shape[1]}x{image.shape[0]}"
            )
        blurry, sharp = gray_levels(image), gray_levels(target)
        magnitude = flow_magnitude(blurry, sharp, self.preset)
        if self.symmetric:
            magnitude = np.maximum(magnitude, flow_magnitude(sharp, blurry, self.preset))
        return (magnitude > self.threshold).astype(np.float32)


__all__ = ["PRESETS", "FlowMask", "Preset", "flow_magnitude", "gray_levels"]
