"""SAM-Deblur's priors (HPLQAQ/SAM-Deblur): Mask Average Pooling (MAP) and the CAT label channel.

Both read ``masks``, an integer label map whose level sets are SAM's grouped masks. With ``nafnet.w32`` as
backbone they rebuild the official models: ``sam_map`` + ``nafnet`` is ``SegNAFNet`` (release files load through
``stack.checkpoint: {path, key: params}``; the prior claims ``pre_seg``/``pre_seg_in``), ``sam_cat`` + ``nafnet``
is ``NAFNet(mask=True)``. Use ``release_compat: true`` with the released SegNAFNet files (masks of value 1/255).
"""

from deblurstack import PriorRecord, hookimpl

REFERENCE = "Li et al., SAM-Deblur: Let Segment Anything Boost Image Deblurring, ICASSP 2024, arXiv 2309.02270"


@hookimpl
def deblurstack_priors():
    return [
        PriorRecord(
            name="sam_map",
            factory="deblurstack.plugins.sam_deblur.pooling:MaskAveragePooling",
            summary="SAM-Deblur's MAP unit: a learned projection of the image averaged over each mask group",
            presets={
                "dropout": {"seg_channels": 2, "dropout": 0.5},  # the paper's model ("Ours")
                "release": {"seg_channels": 2, "dropout": 0.5, "release_compat": True},  # SegNAFNet-GoPro.pth
            },
            requires=("masks",),
            out_channels="seg_channels",
            reference=REFERENCE,
        ),
        PriorRecord(
            name="sam_cat",
            factory="deblurstack.plugins.sam_deblur.cat:LabelChannel",
            summary="SAM-Deblur's CAT baseline: the label map as one extra channel (gray PNG codes / 255)",
            requires=("masks",),
            out_channels=1,
            reference=REFERENCE,
        ),
    ]
