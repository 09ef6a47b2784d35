"""BladeNet (LODE): the Local Blur Perception prior (``lbp``) and Blur-guided Spatial Attention (``bsa``).

With the ``unet.bladenet`` backbone they make BladeNet; ``bsa`` also guides any backbone that offers
insertion points (NAFNet, third-party ones). Both train against a ground-truth ``blur_mask``, which only
training data must provide (``lbs`` synthesis, ReLoBlur, ``local_blur_folder``); inference needs none.
"""

from deblurstack import PriorRecord, hookimpl

_PACKAGE = "deblurstack.plugins.bladenet"
_PAPER = "Wang et al., LODE: Deep Local Deblurring and A New Benchmark, arXiv 2109.09149"


@hookimpl
def deblurstack_priors():
    return [
        PriorRecord(
            name="lbp",
            factory=f"{_PACKAGE}.perception:BlurPerception",
            summary="Local Blur Perception: a U-Net predicting blurred-region logits, appended to the backbone input "
            "(2 channels), trained by 2-class cross-entropy against the blur mask",
            presets={"small": {"width": 16, "depth": 3}, "tiny": {"width": 8, "depth": 2}},
            out_channels=2,
            training_inputs=("blur_mask",),
            reference=_PAPER,
        ),
        PriorRecord(
            name="bsa",
            factory=f"{_PACKAGE}.attention:BlurAttention",
            summary="Blur-guided Spatial Attention at backbone decoder points: F -> F * sigmoid(conv7x7(F)), "
            "the maps' sum trained by a Dice loss against the blur mask",
            guidance=True,
            training_inputs=("blur_mask",),
            reference=_PAPER,
        ),
    ]
