"""U-Net backbone as BladeNet (LODE) uses it: DoubleConv with BatchNorm, max-pool down, bilinear up."""

from deblurstack import BackboneRecord, hookimpl


@hookimpl
def deblurstack_backbones():
    return [
        BackboneRecord(
            name="unet",
            factory="deblurstack.plugins.unet.model:UNet",
            summary="U-Net of BladeNet/LODE: DoubleConv+BN, max-pool down, bilinear up, concatenated skips",
            presets={
                "bladenet": {"width": 64, "depth": 4, "output": "sigmoid"},
                "small": {"width": 16, "depth": 3},
                "tiny": {"width": 8, "depth": 2},
            },
            insertion_points=("decoder_s1", "decoder_s2", "decoder_s4", "decoder_s8"),
            reference="Wang et al., LODE: Deep Local Deblurring and A New Benchmark, arXiv 2109.09149",
        )
    ]
