"""Weight-free mask sources: scikit-image's Felzenszwalb-Huttenlocher graph segmentation and SLIC superpixels.

Both partition the image (every pixel has a segment id, counted from 0), so their maps are not
SAM-Deblur's gray codes: a CAT baseline that divides the map by 255 reads arbitrary ids there, and
with 256 or more segments the map is int32 (the cache stores it as 16-bit PNG).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from deblurstack.data import Pair

Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
#: Gaussian smoothing in pixels; 0 smooths nothing
Sigma = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


def as_label_map(segments: np.ndarray) -> np.ndarray:
    """Segment ids as uint8 when they fit (fewer than 256 segments), else int32."""
    return segments.astype(np.uint8 if segments.max(initial=0) < 256 else np.int32)


class FelzenszwalbMasks:
    """Felzenszwalb-Huttenlocher segments (``skimage.segmentation.felzenszwalb``) as a label map.

    The defaults give SAM-like segment counts on the skimage photos: about 10-40 at 256 px,
    30-100 at 640 px and 70-230 at 1280 px (longer side); the count grows with the image area, so
    raise ``scale`` and ``min_size`` for larger images. About 0.1 s at 256 px and 2-8 s at 1280 px
    on one CPU core.

    Args:
        scale: merge threshold in 8-bit intensity units; larger gives fewer, larger segments.
        sigma: Gaussian smoothing (pixels) before segmenting; reduces noise-driven fragments.
        min_size: smallest segment in pixels; smaller ones are merged into a neighbour.
    """

    def __init__(
        self, scale: Positive = 500.0, sigma: Sigma = 0.8, min_size: Annotated[int, Field(ge=0)] = 200
    ) -> None:
        self.scale, self.sigma, self.min_size = scale, sigma, min_size

    def __call__(self, image: np.ndarray, pair: Pair) -> np.ndarray:
        from skimage.segmentation import felzenszwalb

        segments = felzenszwalb(image, scale=self.scale, sigma=self.sigma, min_size=self.min_size, channel_axis=-1)
        return as_label_map(segments)


class SlicMasks:
    """SLIC superpixels (``skimage.segmentation.slic``, k-means in CIELAB and position) as a label map.

    Segments are compact and of similar size whatever the content, unlike SAM's objects; about
    1.5 s at 1280 px.

    Args:
        n_segments: approximate number of superpixels (connectivity enforcement may give fewer).
        compactness: balance of colour and space; larger gives squarer superpixels.
        sigma: Gaussian smoothing (pixels) before segmenting.
    """

    def __init__(
        self, n_segments: Annotated[int, Field(ge=1)] = 100, compactness: Positive = 10.0, sigma: Sigma = 1.0
    ) -> None:
        self.n_segments, self.compactness, self.sigma = n_segments, compactness, sigma

    def __call__(self, image: np.ndarray, pair: Pair) -> np.ndarray:
        from skimage.segmentation import slic

        segments = slic(
            image,
            n_segments=self.n_segments,
            compactness=self.compactness,
            sigma=self.sigma,
            start_label=0,
            channel_axis=-1,
        )
        return as_label_map(segments)
