"""The ``sam`` mask source: Segment Anything's automatic mask generator, encoded as SAM-Deblur does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import AfterValidator, Field

from deblurstack.checkpoint import read_state_dict
from deblurstack.data import Pair
from deblurstack.plugins.segmentation.grouping import SegmentationError, encode_masks

#: the official checkpoints (segment-anything's README)
CHECKPOINT_URLS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}
#: image encoder width -> model type
ENCODER_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
_PATCH_EMBED = "image_encoder.patch_embed.proj.weight"


def _device(name: str) -> str:
    """``auto`` or a device string torch reads (``cpu``, ``cuda``, ``cuda:1``, ``mps`` ...); not whether it exists."""
    if name != "auto":
        try:
            torch.device(name)
        except RuntimeError as error:
            raise ValueError(f"not a torch device: {' '.join(str(error).split())}") from None
    return name


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Device = Annotated[str, AfterValidator(_device)]


class SamMasks:
    """SAM's automatic masks as SAM-Deblur's gray code map (uint8; level sets = segments, 0 = no mask).

    The model is loaded on the first image that is not cached, so a run served from a mask cache
    never needs SAM or its checkpoint. Compute the maps ahead with ``deblurstack masks CONFIG``
    (one process, GPU if any): data-loader workers would each load their own copy of SAM.

    Args:
        checkpoint: path of the official SAM checkpoint (never downloaded; read with weights_only=True).
        model_type: vit_h (SAM-Deblur's), vit_l or vit_b; must match the checkpoint.
        points_per_side: the generator's point grid is points_per_side x points_per_side.
        points_per_batch: points run through the mask decoder at once (memory only).
        pred_iou_thresh: keep masks whose predicted IoU exceeds this.
        stability_score_thresh: keep masks whose stability score is at least this.
        stability_score_offset: shift of the binarisation cutoff for the stability score.
        box_nms_thresh: box IoU above which duplicate masks are suppressed.
        crop_n_layers: extra layers of image crops to run the generator on (0: the whole image only).
        crop_nms_thresh: box IoU for suppressing duplicates between crops.
        crop_overlap_ratio: overlap of neighbouring crops, as a fraction of the image side.
        crop_n_points_downscale_factor: points per side shrink by this factor per crop layer.
        min_mask_region_area: remove holes and islands smaller than this (pixels); 0 keeps masks as predicted.
        device: auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ...
        channel_order: rgb hands SAM the RGB image it documents; bgr reproduces SAM-Deblur,
            whose script gave SAM OpenCV's BGR image.
    """

    def __init__(
        self,
        checkpoint: str,
        model_type: Literal["vit_h", "vit_l", "vit_b"] = "vit_h",
        # the grid has points_per_side ** 2 points, each decoded into three masks
        points_per_side: Annotated[int, Field(ge=1, le=1024)] = 32,
        # memory grows with it: the three masks of each point of a batch are upsampled to the full image size
        points_per_batch: Annotated[int, Field(ge=1, le=1024)] = 64,
        pred_iou_thresh: Fraction = 0.88,
        stability_score_thresh: Fraction = 0.95,
        stability_score_offset: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 1.0,
        box_nms_thresh: Fraction = 0.7,
        # layer k adds 4 ** k crops, each a full run of SAM's image encoder (4 layers: 341 per image)
        crop_n_layers: Annotated[int, Field(ge=0, le=4)] = 0,
        crop_nms_thresh: Fraction = 0.7,
        crop_overlap_ratio: Annotated[float, Field(ge=0.0, lt=1.0)] = 512 / 1500,
        crop_n_points_downscale_factor: Annotated[int, Field(ge=1)] = 1,
        min_mask_region_area: Annotated[int, Field(ge=0)] = 0,
        device: Device = "auto",
        channel_order: Literal["rgb", "bgr"] = "rgb",
    ) -> None:
        self.checkpoint = Path(checkpoint)
        self.model_type = model_type
        self.device = device
        self.channel_order = channel_order
        # the library's own parameters and defaults; point_grids and output_mode are left at theirs
        self.generator_options: dict[str, Any] = dict(
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            min_mask_region_area=min_mask_region_area,
        )
        self.generator: Any = None  # SamAutomaticMaskGenerator, built on first use

    @classmethod
    def from_model(cls, model: torch.nn.Module, **parameters: Any) -> SamMasks:
        """A source around an already built ``segment_anything.modeling.Sam`` (e.g. a small one in tests),
        used as it is: ``checkpoint``, ``model_type`` and ``device`` play no part."""
        source = cls(checkpoint="", **parameters)
        source.generator = source._generator(model)
        return source

    def __call__(self, image: np.ndarray, pair: Pair) -> np.ndarray:
        if self.generator is None:
            self.generator = self._generator(self._load_model())
        pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)  # the uint8 file SAM-Deblur read
        if self.channel_order == "bgr":
            pixels = np.ascontiguousarray(pixels[..., ::-1])
        records = self.generator.generate(pixels)
        try:
            return encode_masks([record["segmentation"] for record in records], shape=image.shape[:2])
        except SegmentationError as error:
            raise SegmentationError(f"{pair.input}: {error}") from None

    def _generator(self, model: torch.nn.Module) -> Any:
        from segment_anything import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator(model, **self.generator_options)

    def _load_model(self) -> torch.nn.Module:
        """Build the model type and load the checkpoint ourselves: segment_anything's loader calls
        ``torch.load`` without ``weights_only``, which could run code from the file."""
        from segment_anything import sam_model_registry

        url = CHECKPOINT_URLS[self.model_type]
        if not self.checkpoint.is_file():
            raise SegmentationError(
                f"no SAM {self.model_type} checkpoint at {self.checkpoint.absolute()}: download {url} "
                f"and put it there, or set checkpoint: to your copy (nothing is downloaded)"
            )
        state = read_state_dict(self.checkpoint)
        if _PATCH_EMBED not in state:
            raise SegmentationError(f"{self.checkpoint}: not a SAM checkpoint (no {_PATCH_EMBED})")
        width = state[_PATCH_EMBED].shape[0]
        found = ENCODER_WIDTHS.get(width)
        if found is None:
            raise SegmentationError(
                f"{self.checkpoint}: image encoder width {width} is none of SAM's (768 vit_b, 1024 vit_l, 1280 vit_h)"
            )
        if found != self.model_type:
            raise SegmentationError(
                f"{self.checkpoint}: a {found} checkpoint, but model_type is {self.model_type}; set model_type: {found}"
            )
        model = sam_model_registry[self.model_type](checkpoint=None)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            first = " ".join(str(error).split())[:300]
            raise SegmentationError(f"{self.checkpoint}: does not fit SAM {self.model_type}: {first}") from None
        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        return model.to(device).eval()
