"""Mask sources for the ``masks`` auxiliary input: SAM (as SAM-Deblur encodes it), classical
segmentations, and SAM-Deblur's precomputed files. Records only; nothing heavy is imported here."""

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
    ]
