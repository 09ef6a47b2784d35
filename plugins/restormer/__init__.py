"""Restormer backbone (Zamir et al., CVPR 2022): transposed-attention transformer U-Net."""

from deblurstack import BackboneRecord, hookimpl


@hookimpl
def deblurstack_backbones():
    return [
        BackboneRecord(
            name="restormer",
            factory="deblurstack.plugins.restormer.model:Restormer",
            summary="Restormer: MDTA attention across channels + gated-dconv FFN in a 4-level U-Net (26.13 M)",
            presets={
                # the official configs: Motion_Deblurring/ and Denoising/Options/*.yml
                "motion": {"layer_norm": "WithBias"},
                "denoise": {"layer_norm": "BiasFree"},
            },
            insertion_points=("decoder_s1", "decoder_s2", "decoder_s4"),
            tlc=False,  # no global pooling: attention is over channels, normalised along H*W
            reported={
                "motion": "GoPro 32.92/0.961, HIDE 31.22/0.942, RealBlur-R 36.19/0.957, RealBlur-J 28.96/0.879 "
                "(PSNR dB/SSIM, trained on GoPro; paper Table 2)",
            },
            reference="Zamir et al., Restormer: Efficient Transformer for High-Resolution Image Restoration, "
            "CVPR 2022, arXiv 2111.09881; github.com/swz30/Restormer",
        )
    ]
