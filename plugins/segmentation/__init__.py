"""Mask sources for the ``masks`` auxiliary input: SAM (as SAM-Deblur encodes it), classical
segmentations, and SAM-Deblur's precomputed files; and for ``blur_mask``: optical flow between a
pair's images (BladeNet/LODE). Records only; nothing heavy is imported here."""

from deblurstack import MaskSourceRecord, hookimpl

_PACKAGE = "deblurstack.plugins.segmentation"
_SAM_DEBLUR = "Li et al., SAM-Deblur: Let Segment Anything Boost Image Deblurring, ICASSP 2024"


@hookimpl
def deblurstack_mask_sources():
    return [
        MaskSourceRecord(
            name="sam",
            factory=f"{_PACKAGE}.sam:SamMasks",
            summary="Segment Anything's automatic masks as SAM-Deblur's uint8 gray code map (checkpoint from a file)",
            presets={"sam_deblur": {"model_type": "vit_h", "channel_order": "bgr"}},
            reference=f"Kirillov et al., Segment Anything, ICCV 2023; {_SAM_DEBLUR}",
        ),
        MaskSourceRecord(
            name="felzenszwalb",
            factory=f"{_PACKAGE}.classical:FelzenszwalbMasks",
            summary="Felzenszwalb-Huttenlocher graph segmentation (scikit-image), no weights",
            reference="Felzenszwalb and Huttenlocher, Efficient Graph-Based Image Segmentation, IJCV 2004",
        ),
        MaskSourceRecord(
            name="slic",
            factory=f"{_PACKAGE}.classical:SlicMasks",
            summary="SLIC superpixels (scikit-image), no weights",
            reference="Achanta et al., SLIC Superpixels Compared to State-of-the-Art Superpixel Methods, TPAMI 2012",
        ),
        MaskSourceRecord(
            name="mask_files",
            factory=f"{_PACKAGE}.files:MaskFiles",
            summary="Precomputed maps by image name: gray label PNG or SAM-Deblur's grouped-masks .npz",
            reference=_SAM_DEBLUR,
        ),
        MaskSourceRecord(
            name="flow_mask",
            factory=f"{_PACKAGE}.flow:FlowMask",
            summary="blur_mask of a real pair: DIS optical flow between blurry input and sharp target over 0.25 px",
            provides=("blur_mask",),
            reference="Wang et al., LODE: Deep Local Deblurring and A New Benchmark, arXiv 2109.09149 "
            "(DeepFlow there); Kroeger et al., Fast Optical Flow using Dense Inverse Search, ECCV 2016",
        ),
    ]
