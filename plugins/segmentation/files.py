"""The ``mask_files`` mask source: precomputed maps in the formats SAM-Deblur distributes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from deblurstack.data import Pair, read_map
from deblurstack.params import ExistingFolder
from deblurstack.plugins.segmentation.grouping import SegmentationError, groups_from_npz

SUFFIXES = {"png": (".png",), "npz": (".npz",), "auto": (".png", ".npz")}


class MaskFiles:
    """Reads each image's map from ``folder``: ``<name>.png`` or ``<name>.npz``.

    ``png`` is SAM-Deblur's gray code map (its ``input_mask`` folders; any 8/16-bit single-channel
    label PNG works), returned as stored. ``npz`` is its grouped masks (``grouped_masks``: key
    ``masks``, bool ``M x 1 x H x W`` level sets), returned as a map whose label ``k`` is group ``k``.
    The file is looked up by the pair's name, then by the input file's stem (SAM-Deblur names maps
    like the image), so flat folders and nested benchmark layouts both work.

    Args:
        folder: the folder of maps.
        format: png, npz, or auto (png when both exist).
    """

    def __init__(self, folder: ExistingFolder, format: Literal["auto", "png", "npz"] = "auto") -> None:
        self.folder = Path(folder)
        self.format = format

    def find(self, pair: Pair) -> Path:
        """The map file of ``pair``."""
        stems = dict.fromkeys([pair.name, Path(pair.input).stem])
        candidates = [self.folder / f"{stem}{suffix}" for suffix in SUFFIXES[self.format] for stem in stems]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            names = ", ".join(path.name for path in candidates)
            raise SegmentationError(f"{pair.input}: no masks file in {self.folder} (looked for {names})")
        return found

    def __call__(self, image: np.ndarray, pair: Pair) -> np.ndarray:
        path = self.find(pair)
        labels = groups_from_npz(path) if path.suffix == ".npz" else read_map(path)
        if labels.shape != image.shape[:2]:
            raise SegmentationError(
                f"{path} is {labels.shape[1]}x{labels.shape[0]} but {pair.input} is {image.shape[1]}x{image.shape[0]}"
            )
        return labels
