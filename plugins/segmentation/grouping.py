"""SAM-Deblur's mask representations: the gray code map of SAM's masks and its grouped ``.npz`` files.

SAM-Deblur (scripts/data_preparation/1_create_masks_with_sam.py) collapses the automatic mask
generator's masks into one uint8 "gray code map": mask ``i`` (0-based, generator order) adds the
code ``2(i+1)`` (``i < 127``: 2, 4, ..., 254) or ``2(255-i) - 1`` (``i >= 127``: 255, 253, ..., 1)
on its pixels, and the sum is clipped to 0..255. Overlaps therefore get new values, 0 means "no
mask", and the level sets of the map are the segments (its MAP variants' "grouped masks",
2_masks_to_grouped_masks.py: one bool mask per distinct value, ``M x 1 x H x W`` in ``<stem>.npz``).
The CAT baseline reads the map itself, divided by 255, as a fourth input channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deblurstack import DeblurstackError

#: masks the gray code can tell apart: from mask 255 on, SAM-Deblur's codes are 0 or negative
MAX_MASKS = 255


class SegmentationError(DeblurstackError):
    """Masks that cannot be computed, encoded or read."""


def mask_codes(count: int) -> np.ndarray:
    """The gray code of each of ``count`` masks: ``2(i+1)`` for ``i < 127``, else ``2(255-i) - 1``."""
    index = np.arange(count)
    return np.where(index < 127, 2 * (index + 1), 2 * (255 - index) - 1).astype(np.int32)


def encode_masks(masks: Sequence[np.ndarray], shape: tuple[int, int] | None = None) -> np.ndarray:
    """SAM-Deblur's gray code map of ``masks`` (``H x W`` bool arrays in generator order): uint8 ``H x W``.

    ``shape`` gives the size when there are no masks (the map is then all 0). More than
    :data:`MAX_MASKS` masks is an error: SAM-Deblur's arithmetic would give mask 255 the code -1 and
    later ones ever more negative codes that subtract from their overlaps (deliberate deviation).
    """
    if len(masks) > MAX_MASKS:
        raise SegmentationError(
            f"{len(masks)} masks: SAM-Deblur's gray code map holds at most {MAX_MASKS} "
            f"(codes of mask {MAX_MASKS + 1} on would be <= 0); raise pred_iou_thresh or stability_score_thresh"
        )
    if not masks:
        if shape is None:
            raise SegmentationError("encode_masks: no masks and no shape")
        return np.zeros(shape, np.uint8)
    stacked = np.stack([np.asarray(mask, dtype=bool) for mask in masks])  # M x H x W
    total = np.einsum("m,mhw->hw", mask_codes(len(masks)), stacked)  # overlaps sum, as in the official script
    return np.clip(total, 0, 255).astype(np.uint8)


def groups_from_npz(path: str | Path) -> np.ndarray:
    """The label map of a SAM-Deblur grouped-masks file: group ``k`` of key ``masks`` (``M x 1 x H x W``
    bool level sets, in file order) gets the label ``k``; uint8 up to 256 groups, else int32.

    The groups must partition the image (every pixel in exactly one group), as the official files do.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            masks = data["masks"]
    except KeyError:
        raise SegmentationError(f"{path}: no array 'masks' (SAM-Deblur's grouped masks file)") from None
    except (OSError, ValueError) as error:
        raise SegmentationError(f"{path}: not a readable .npz file: {error}") from None
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3 or not len(masks):
        raise SegmentationError(f"{path}: 'masks' has shape {masks.shape}, expected M x 1 x H x W with M >= 1")
    masks = masks.astype(bool, copy=False)
    outside = int(np.count_nonzero(masks.sum(axis=0) != 1))
    if outside:
        raise SegmentationError(
            f"{path}: the {len(masks)} groups do not partition the image ({outside} pixels in none or several)"
        )
    return np.argmax(masks, axis=0).astype(np.uint8 if len(masks) <= 256 else np.int32)
